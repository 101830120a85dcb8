"""WHMCS emulator: the `includes/api.php` form API of the billing system, in memory.

Modules: `phpdata` (PHP serialize and PHP-style form arrays), `emulator` (state and the actions),
`app` (HTTP door, auth, IP allow-list), `demo` (the demo dataset and its documented ids).
Imports nothing of the engine, so it agrees with WHMCS rather than with our client.
"""
