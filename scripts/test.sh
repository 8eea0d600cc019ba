#!/usr/bin/env bash
# The project's test command: starts the services the tests need (on loopback,
# see scripts/test-services.sh), runs every test of the workspace, stops the
# services, and validates docker-compose.yml.
#
#   scripts/test.sh                    everything
#   scripts/test.sh -E 'test(foo)'     extra arguments go to `cargo nextest run`
#
# Environment:
#   CLM_KEEP_SERVICES=1     leave the services running afterwards (then
#                           `eval "$(scripts/test-services.sh env)"` and
#                           `scripts/test-services.sh stop` when done)
#   CLM_TEST_SERVICES       which services to start (default: postgres)
#   CLM_TEST_SERVICES_DIR   their scratch directory (default: target/test-services)
#   CLM_TEST_PYTHON         a Python with zeep for hub/tests/it/soap.rs (default: the
#                           venv target/test-python, made and reused here)
#
# Tests get CLM_TEST_PG_URL (and CLM_TEST_REDIS_URL, CLM_TEST_AMQP_URL when those
# services are selected) and CLM_TEST_REQUIRE_SERVICES=1: under this script a
# test must fail, not skip, when its service is missing. If a service cannot be
# started, no test runs and this script fails.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
SERVICES_SH="$ROOT/scripts/test-services.sh"
export CLM_TEST_SERVICES_DIR="${CLM_TEST_SERVICES_DIR:-$ROOT/target/test-services}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"

say() { printf '==> %s\n' "$*"; }

stop_services() {
    if [[ "${CLM_KEEP_SERVICES:-0}" == 1 ]]; then
        say "services left running (CLM_KEEP_SERVICES=1); stop them with: scripts/test-services.sh stop"
    else
        bash "$SERVICES_SH" stop || say "warning: scripts/test-services.sh stop failed"
    fi
}
trap stop_services EXIT
# So that Ctrl-C or a CI timeout still runs the EXIT trap.
trap 'exit 130' INT
trap 'exit 143' TERM

# --- services -----------------------------------------------------------------
say "starting test services: ${CLM_TEST_SERVICES:-postgres redis rabbitmq}"
if ! bash "$SERVICES_SH" start; then
    say "FAILED: test services did not start (scratch dir: $CLM_TEST_SERVICES_DIR); not running the tests"
    exit 1
fi
env_lines="$(bash "$SERVICES_SH" env)"
eval "$env_lines"
printf '%s\n' "$env_lines" | sed 's/^/    /'
if [[ -z "${CLM_TEST_PG_URL:-}" ]]; then
    say "FAILED: CLM_TEST_PG_URL is not set after starting the services"
    exit 1
fi
export CLM_TEST_REQUIRE_SERVICES=1

failed=()

# --- tools --------------------------------------------------------------------
# xmllint (Debian's libxml2-utils) validates the SOAP contracts and sample
# envelopes in wsdl/: contracts/tests/wsdl.rs fails (never skips) without it.
if ! command -v xmllint >/dev/null 2>&1; then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        say "xmllint not found: installing libxml2-utils (apt-get)"
        if DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libxml2-utils >/dev/null; then
            say "ok: $(xmllint --version 2>&1 | head -n 1)"
        else
            say "FAILED: apt-get install libxml2-utils; the wsdl/ tests will fail"
            failed+=("installing libxml2-utils")
        fi
    else
        say "FAILED: xmllint not found and installing it needs root and apt-get: apt-get install libxml2-utils; the wsdl/ tests will fail"
        failed+=("xmllint missing (libxml2-utils)")
    fi
fi

# Postfix's smtp-sink (Debian's postfix) is the real MTA test server of
# connectors/tests/smtp_sink.rs, which fails (never skips) without it. Only that
# binary is used; postfix itself is not started.
if [[ ! -x /usr/sbin/smtp-sink ]]; then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        say "smtp-sink not found: installing postfix (apt-get)"
        if DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postfix >/dev/null; then
            say "ok: /usr/sbin/smtp-sink (postfix $(dpkg-query -W -f='${Version}' postfix 2>/dev/null))"
        else
            say "FAILED: apt-get install postfix; connectors/tests/smtp_sink.rs will fail"
            failed+=("installing postfix (smtp-sink)")
        fi
    else
        say "FAILED: /usr/sbin/smtp-sink not found and installing it needs root and apt-get: apt-get install postfix; connectors/tests/smtp_sink.rs will fail"
        failed+=("smtp-sink missing (postfix)")
    fi
fi

# Kannel (Debian's kannel and kannel-extras): bearerbox, smsbox and the fakesmsc
# test SMSC run on loopback in hub/tests/it/kannel.rs, which fails (never skips)
# without them. Nothing is started here; the tests start their own on free ports.
KANNEL_BINS=(/usr/sbin/bearerbox /usr/sbin/smsbox /usr/lib/kannel/test/fakesmsc)
has_kannel() { local b; for b in "${KANNEL_BINS[@]}"; do [[ -x "$b" ]] || return 1; done; }
if ! has_kannel; then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        say "Kannel not found: installing kannel kannel-extras (apt-get)"
        if DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kannel kannel-extras >/dev/null &&
            has_kannel; then
            say "ok: Kannel $(dpkg-query -W -f='${Version}' kannel 2>/dev/null)"
        else
            say "FAILED: apt-get install kannel kannel-extras; hub/tests/it/kannel.rs will fail"
            failed+=("installing kannel, kannel-extras")
        fi
    else
        say "FAILED: Kannel (${KANNEL_BINS[*]}) not found and installing it needs root and apt-get: apt-get install kannel kannel-extras; hub/tests/it/kannel.rs will fail"
        failed+=("Kannel missing (kannel, kannel-extras)")
    fi
fi

# Python zeep, a real third-party SOAP client, calls the hub's SOAP response
# service in hub/tests/it/soap.rs, which runs $CLM_TEST_PYTHON and fails (never
# skips) without it. A venv in target/test-python, made once and reused while
# zeep imports; Debian's python3 needs python3-venv for `python3 -m venv`.
PY_VENV="$ROOT/target/test-python"
has_zeep() { [[ -x "$PY_VENV/bin/python" ]] && "$PY_VENV/bin/python" -c 'import zeep' >/dev/null 2>&1; }
make_venv() { rm -rf "$PY_VENV" && python3 -m venv "$PY_VENV" >/dev/null 2>&1; }
if [[ -n "${CLM_TEST_PYTHON:-}" ]]; then
    say "CLM_TEST_PYTHON=$CLM_TEST_PYTHON (given): not making $PY_VENV"
elif has_zeep; then
    export CLM_TEST_PYTHON="$PY_VENV/bin/python"
else
    say "making the Python venv for the zeep tests: $PY_VENV"
    if ! command -v python3 >/dev/null 2>&1 || ! make_venv; then
        if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
            say "python3 -m venv failed: installing python3-venv (apt-get)"
            { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
                DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 python3-venv >/dev/null; } ||
                say "FAILED: apt-get install python3-venv"
        fi
        make_venv || say "FAILED: python3 -m venv $PY_VENV (Debian: apt-get install python3-venv)"
    fi
    if [[ -x "$PY_VENV/bin/python" ]]; then
        say "pip install zeep==4.3.*"
        "$PY_VENV/bin/python" -m pip install --quiet --disable-pip-version-check 'zeep==4.3.*' ||
            say "FAILED: pip install zeep==4.3.*"
    fi
    if has_zeep; then
        export CLM_TEST_PYTHON="$PY_VENV/bin/python"
        say "ok: zeep $("$CLM_TEST_PYTHON" -c 'import zeep; print(zeep.__version__)') in $PY_VENV"
    else
        say "FAILED: no Python venv with zeep in $PY_VENV; the SOAP client tests will fail"
        failed+=("Python venv with zeep")
    fi
fi

# --- tests --------------------------------------------------------------------
if cargo nextest --version >/dev/null 2>&1; then
    say "cargo nextest run --workspace --all-targets --no-fail-fast $*"
    cargo nextest run --workspace --all-targets --no-fail-fast "$@" || failed+=("tests (cargo nextest, exit $?)")
else
    say "cargo-nextest not found (cargo install cargo-nextest --locked); falling back to cargo test"
    say "cargo test --workspace --all-targets --no-fail-fast $*"
    cargo test --workspace --all-targets --no-fail-fast "$@" || failed+=("tests (cargo test, exit $?)")
fi

# --- docker-compose.yml ---------------------------------------------------------
# `config` only parses, interpolates and validates the file: no engine needed.
compose=()
if command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
    compose=(docker-compose)
fi
if ((${#compose[@]} == 0)); then
    if command -v docker >/dev/null 2>&1; then
        say "SKIPPED: docker-compose.yml not validated: the docker client has no compose plugin and docker-compose is absent"
    else
        say "SKIPPED: docker-compose.yml not validated: no docker client and no docker-compose"
    fi
else
    # The secrets are required (${VAR:?}) for a real `up`; placeholders suffice to validate.
    if CLM_HUB__SERVER__API_TOKEN="${CLM_HUB__SERVER__API_TOKEN:-compose-config-check}" \
        CLM_HUB__CHANNELS__SMS__INGEST__TOKEN="${CLM_HUB__CHANNELS__SMS__INGEST__TOKEN:-compose-config-check}" \
        CLM_WEBHOOK_TOKEN="${CLM_WEBHOOK_TOKEN:-compose-config-check}" \
        CLM_EMAIL_TRACKING_SECRET="${CLM_EMAIL_TRACKING_SECRET:-compose-config-check}" \
        "${compose[@]}" -f docker-compose.yml config -q; then
        say "ok: docker-compose.yml is valid (${compose[*]} config -q)"
    else
        say "FAILED: docker-compose.yml is invalid (${compose[*]} config -q)"
        failed+=("docker-compose.yml validation")
    fi
fi

# --- verdict --------------------------------------------------------------------
if ((${#failed[@]} > 0)); then
    say "scripts/test.sh FAILED: ${failed[*]}"
    exit 1
fi
say "scripts/test.sh: all passed"
