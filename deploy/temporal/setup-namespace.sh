#!/bin/sh
# One-shot, once the bundled Temporal server listens (compose service
# temporal-search-attributes): the namespace the engine uses, and the custom search attributes
# the fulfillment workflow sets from its first task. The worker starts only after this exits 0,
# so it exits 0 only when every attribute is listed, never on a create that merely failed
# because the attribute already existed.
set -eu

: "${TEMPORAL_ADDRESS:?the Temporal frontend, host:port}"
namespace=${TEMPORAL_NAMESPACE:-default}
retention=${TEMPORAL_NAMESPACE_RETENTION:-7d}
# devstack.services.SEARCH_ATTRIBUTES; tests/unit/test_deployment_files.py keeps them equal.
attributes="SalesforceOrderId SalesforceAccountId FulfillmentStatus FulfillmentStep FulfillmentErrorCode"

attempt=0
until temporal operator cluster health --address "$TEMPORAL_ADDRESS" >/dev/null 2>&1; do
    attempt=$((attempt + 1))
    if [ "$attempt" -ge 60 ]; then
        echo "Temporal at $TEMPORAL_ADDRESS is not serving after 2 minutes" >&2
        exit 1
    fi
    sleep 2
done

if ! temporal operator namespace describe --address "$TEMPORAL_ADDRESS" \
    --namespace "$namespace" >/dev/null 2>&1; then
    temporal operator namespace create --address "$TEMPORAL_ADDRESS" \
        --namespace "$namespace" --retention "$retention"
fi

# A namespace just made may not be in every frontend's cache yet, so creates can fail for a
# moment: retry until the list shows them all.
attempt=0
while :; do
    listed=$(temporal operator search-attribute list --address "$TEMPORAL_ADDRESS" \
        --namespace "$namespace" 2>/dev/null || true)
    missing=""
    for name in $attributes; do
        printf '%s\n' "$listed" | grep -qw "$name" || missing="$missing $name"
    done
    if [ -z "$missing" ]; then
        break
    fi
    attempt=$((attempt + 1))
    if [ "$attempt" -ge 30 ]; then
        echo "search attributes not registered in $namespace:$missing" >&2
        exit 1
    fi
    for name in $missing; do
        # One --name per call: given several, the CLI registers only one of them.
        temporal operator search-attribute create --address "$TEMPORAL_ADDRESS" \
            --namespace "$namespace" --name "$name" --type Keyword || true
    done
    sleep 2
done
echo "namespace $namespace is ready with its search attributes: $attributes"
