# A real Synapse on loopback, shared by scripts/interop and scripts/bench. Source it after
# scripts/lib.sh. It installs matrix-synapse from PyPI into a virtualenv, runs a Postgres
# cluster of its own for it and starts it with a TLS federation listener (self-signed
# certificate) and a plain client listener on 127.0.0.1. The caller traps EXIT and calls
# synapse_stop and pg_cluster_stop.
#
# The switches that let it federate on loopback (certificates not checked, loopback allowed)
# and its rate limits lifted exist only in these test setups.

# The Synapse release the interop cases and the benchmarks were last run against (README).
synapse_version=${SYNAPSE_VERSION:-1.163.2}
python=${PYTHON:-python3}

# The loopback address Synapse listens on. scripts/interop gives it an address of its own
# (127.0.0.4) with fixed ports, so no port is chosen before Synapse binds it: nothing else
# listens there, and its ports (8448, 8008) lie below the range the kernel hands out to
# outgoing connections.
synapse_address=127.0.0.1

synapse_pid=
pg_dir=
pg_bin=
pg_user=

free_port() {
	"$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Postgres refuses to run as root: then the cluster belongs to an unprivileged user.
as_pg_user() {
	if [ "$(id -u)" -eq 0 ]; then
		runuser -u "$pg_user" -- "$@"
	else
		"$@"
	fi
}

# Install Synapse $synapse_version into the virtualenv $1 unless it is there already.
synapse_install() { # venv
	local venv=$1
	command -v "$python" >/dev/null || apt_install "Python 3 was not found." "set PYTHON to a Python 3.10 or later" python3
	"$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
		die "Synapse needs Python 3.10 or later; $python is $("$python" --version 2>&1). Set PYTHON to a newer one."
	# The installed distribution's version: synapse.__version__ adds git details when the
	# virtualenv lies inside a git checkout, as it does here.
	if "$venv/bin/python" -c 'import importlib.metadata as m, sys
sys.exit(m.version("matrix-synapse") != sys.argv[1])' "$synapse_version" 2>/dev/null; then
		return 0
	fi
	step "Installing Synapse $synapse_version into $venv"
	make_venv "$python" "$venv" "set PYTHON to a Python 3.10 or later with its venv module"
	# psycopg2-binary is the driver the [postgres] extra names, as a wheel: nothing to compile.
	"$venv/bin/pip" install --quiet --disable-pip-version-check \
		"matrix-synapse==$synapse_version" psycopg2-binary
}

# Create a fresh Postgres cluster in the new directory $1 (its Unix socket lives there, so keep
# the path short) and start it with the extra server settings that follow, e.g.
# `-c fsync=off`. Sets pg_dir, pg_bin and pg_user.
pg_cluster_start() { # dir, postgres options...
	pg_dir=$1
	shift
	ensure_postgres
	pg_bin=$(postgres_bindir)
	[ -x "$pg_bin/pg_ctl" ] || die "pg_ctl is missing beside $pg_bin/postgres"
	pg_user=$(id -un)
	if [ "$(id -u)" -eq 0 ]; then
		if id postgres >/dev/null 2>&1; then pg_user=postgres; else pg_user=nobody; fi
	fi
	mkdir -p "$pg_dir"
	[ "$(id -u)" -eq 0 ] && chown "$pg_user" "$pg_dir"
	step "Starting a Postgres cluster in $pg_dir"
	as_pg_user "$pg_bin/initdb" -D "$pg_dir/data" --username=postgres --auth=trust \
		--encoding=UTF8 --locale=C --no-sync >"$pg_dir/initdb.log" 2>&1 ||
		die "initdb failed: $(cat "$pg_dir/initdb.log")"
	as_pg_user "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/postgres.log" -w -t 60 \
		-o "-c listen_addresses= -c unix_socket_directories=$pg_dir $*" \
		start >/dev/null || die "Postgres did not start: $(cat "$pg_dir/postgres.log")"
}

# Stop the cluster pg_cluster_start started (its files stay for the caller to remove).
pg_cluster_stop() {
	if [ -n "$pg_dir" ] && [ -f "$pg_dir/data/postmaster.pid" ]; then
		as_pg_user "$pg_bin/pg_ctl" -D "$pg_dir/data" -m fast -w stop >/dev/null 2>&1 ||
			as_pg_user "$pg_bin/pg_ctl" -D "$pg_dir/data" -m immediate -w stop >/dev/null 2>&1 || true
	fi
}

# Write a self-signed certificate for 127.0.0.1, $synapse_address and localhost to
# $2/tls.crt and $2/tls.key
# (RSA 2048, PKCS#1 PEM), using the `cryptography` package of the virtualenv $1.
self_signed_cert() { # venv, dir
	"$1/bin/python" - "$2" "$synapse_address" <<'EOF'
import datetime, ipaddress, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

out = sys.argv[1]
key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
now = datetime.datetime.now(datetime.timezone.utc)
cert = (
    x509.CertificateBuilder()
    .subject_name(name)
    .issuer_name(name)
    .public_key(key.public_key())
    .serial_number(x509.random_serial_number())
    .not_valid_before(now - datetime.timedelta(hours=1))
    .not_valid_after(now + datetime.timedelta(days=7))
    .add_extension(
        x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address(a)) for a in {"127.0.0.1", sys.argv[2]}]
            + [x509.DNSName("localhost")]
        ),
        critical=False,
    )
    .sign(key, hashes.SHA256())
)
with open(f"{out}/tls.crt", "wb") as f:
    f.write(cert.public_bytes(serialization.Encoding.PEM))
with open(f"{out}/tls.key", "wb") as f:
    f.write(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
EOF
}

# Configure Synapse in the new directory $2 (homeserver.yaml, log.yaml, TLS files): server
# name $synapse_address:$3, federation over TLS on that address's port $3, the client API on
# its port $4, database
# `synapse` of the cluster pg_cluster_start started (created here). Callers append their
# own top-level keys to $2/homeserver.yaml.
synapse_configure() { # venv, run dir, federation port, client port
	local venv=$1 run=$2 fed_port=$3 client_port=$4
	rm -rf "$run"
	mkdir -p "$run"
	"$venv/bin/python" - "$pg_dir" <<'EOF'
import sys
import psycopg2

conn = psycopg2.connect(host=sys.argv[1], port=5432, user="postgres", dbname="postgres")
conn.autocommit = True
# Synapse requires C collation for its database.
conn.cursor().execute(
    "CREATE DATABASE synapse ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
)
EOF
	self_signed_cert "$venv" "$run"
	local lifted='{per_second: 1000, burst_count: 1000}'
	secret() { "$python" -c 'import secrets; print(secrets.token_hex(32))'; }
	cat >"$run/homeserver.yaml" <<EOF
server_name: "$synapse_address:$fed_port"
pid_file: "$run/homeserver.pid"
public_baseurl: "http://$synapse_address:$client_port/"
listeners:
  - port: $fed_port
    bind_addresses: ["$synapse_address"]
    type: http
    tls: true
    resources: [{names: [federation], compress: false}]
  - port: $client_port
    bind_addresses: ["$synapse_address"]
    type: http
    tls: false
    resources: [{names: [client], compress: false}]
tls_certificate_path: "$run/tls.crt"
tls_private_key_path: "$run/tls.key"
database:
  name: psycopg2
  args: {user: postgres, dbname: synapse, host: "$pg_dir", port: 5432, cp_min: 1, cp_max: 10}
log_config: "$run/log.yaml"
media_store_path: "$run/media"
signing_key_path: "$run/signing.key"
registration_shared_secret: "$(secret)"
macaroon_secret_key: "$(secret)"
form_secret: "$(secret)"
report_stats: false
trusted_key_servers: []
suppress_key_server_warning: true
enable_registration: true
enable_registration_without_verification: true
# Test setup only: self-signed certificates and servers on loopback.
federation_verify_certificates: false
# Synapse also refuses server names that are IP literals in its blocklist, whatever the
# allowlist says: the blocklist is emptied (0.0.0.0 and :: stay blocked).
ip_range_blacklist: []
ip_range_whitelist: ["127.0.0.0/8"]
allow_public_rooms_over_federation: true
rc_message: $lifted
rc_registration: $lifted
rc_login:
  address: $lifted
  account: $lifted
  failed_attempts: $lifted
rc_joins:
  local: $lifted
  remote: $lifted
rc_joins_per_room: $lifted
rc_invites:
  per_room: $lifted
  per_user: $lifted
  per_issuer: $lifted
rc_key_requests: $lifted
rc_room_creation: $lifted
rc_presence:
  per_user: $lifted
rc_federation:
  window_size: 1000
  sleep_limit: 1000
  sleep_delay: 1
  reject_limit: 1000
  concurrent: 100
EOF
	cat >"$run/log.yaml" <<EOF
version: 1
formatters:
  precise:
    format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s'
handlers:
  file:
    class: logging.FileHandler
    formatter: precise
    filename: "$run/synapse.log"
    encoding: utf8
loggers:
  synapse.storage.SQL:
    level: INFO
root:
  level: ${SYNAPSE_LOG_LEVEL:-INFO}
  handlers: [file]
disable_existing_loggers: false
EOF
}

# Start the Synapse configured in $2 and wait until both listeners answer. Sets synapse_pid.
synapse_start() { # venv, run dir, federation port, client port
	local venv=$1 run=$2 fed_port=$3 client_port=$4
	step "Starting Synapse $synapse_version as $synapse_address:$fed_port (client API on $synapse_address:$client_port)"
	"$venv/bin/python" -m synapse.app.homeserver -c "$run/homeserver.yaml" --generate-keys >/dev/null
	"$venv/bin/python" -m synapse.app.homeserver -c "$run/homeserver.yaml" >"$run/synapse.out" 2>&1 &
	synapse_pid=$!
	wait_for_http "$synapse_pid" "http://$synapse_address:$client_port/_matrix/client/versions" \
		"https://$synapse_address:$fed_port/_matrix/federation/v1/version" || {
		tail -n 30 "$run/synapse.out" "$run/synapse.log" >&2 || true
		die "Synapse did not start"
	}
}

# Wait (up to 120 s) until every URL answers, as long as process $1 lives. HTTPS certificates
# are not checked.
wait_for_http() { # pid, url...
	"$python" - "$@" <<'EOF'
import os, ssl, sys, time, urllib.request

pid, urls = int(sys.argv[1]), sys.argv[2:]
insecure = ssl.create_default_context()
insecure.check_hostname = False
insecure.verify_mode = ssl.CERT_NONE
deadline = time.monotonic() + 120
for url in urls:
    while True:
        try:
            urllib.request.urlopen(url, timeout=5, context=insecure).read()
            break
        except Exception:
            try:
                os.kill(pid, 0)
            except OSError:
                sys.exit(f"process {pid} exited")
            if time.monotonic() > deadline:
                sys.exit(f"{url} did not answer within 120 s")
            time.sleep(0.3)
EOF
}

# Stop a process started by the caller: SIGTERM, up to 10 s, then SIGKILL.
stop_process() { # pid
	local pid=$1
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
}

synapse_stop() {
	stop_process "$synapse_pid"
}
