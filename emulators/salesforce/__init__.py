"""A local stand-in for Salesforce: OAuth, REST (SOQL, sObjects, composite) and the Streaming API.

`app.create_app` builds the Starlette app that `fulfillment emulate salesforce` serves over TLS.
The org's data model lives in `schema` and `store`, SOQL in `soql`, the HTTP surface in `auth` and
`rest`, change events in `events`/`streaming`. Nothing here imports the engine.
"""
