# Shell functions shared by the scripts in this directory. Source it after setting
# `script_name` (used in error messages).

die() {
	printf '%s: %s\n' "${script_name:-scripts}" "$*" >&2
	exit 1
}

if [ -t 1 ]; then
	step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
else
	step() { printf '\n==> %s\n' "$*"; }
fi

# Print the first directory holding both initdb and postgres, searched the same way as
# src/db/embedded.rs: PATH, /usr/lib/postgresql/*/bin, /usr/local/pgsql/bin.
postgres_bindir() {
	local dir
	local IFS=:
	for dir in $PATH /usr/lib/postgresql/*/bin /usr/local/pgsql/bin; do
		if [ -x "$dir/initdb" ] && [ -x "$dir/postgres" ]; then
			printf '%s\n' "$dir"
			return 0
		fi
	done
	return 1
}

postgres_found() {
	postgres_bindir >/dev/null
}

# Install Debian packages with apt-get (directly as root, through sudo otherwise). When that
# cannot be done, fail with $1 (what is missing), what to install, and $2 (another way out).
apt_install() { # what is missing, alternative, package...
	local missing=$1 alternative=$2
	shift 2
	local sudo=()
	if [ "$(id -u)" -ne 0 ]; then
		if command -v sudo >/dev/null && command -v apt-get >/dev/null; then
			sudo=(sudo)
		else
			die "$missing Install them with \`apt-get install $*\` (Debian/Ubuntu) as root${alternative:+, or $alternative}."
		fi
	fi
	command -v apt-get >/dev/null ||
		die "$missing Install your system's package for $*${alternative:+, or $alternative}."
	step "Installing $*: apt-get install $*"
	"${sudo[@]}" apt-get update -qq
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Install the Postgres server binaries when they are missing; $1 is another way out to name
# when that cannot be done (e.g. using an existing server).
ensure_postgres() { # alternative
	postgres_found && return 0
	apt_install "Postgres server binaries (initdb, postgres) were not found on PATH or in /usr/lib/postgresql/*/bin." \
		"${1:-}" postgresql
	postgres_found || die "apt-get installed postgresql, but initdb and postgres are still not found"
}

# Make a fresh virtualenv at $2 with the Python 3 interpreter $1 (installing python3 with
# apt-get when no `python3` is found, and python3-venv when the interpreter cannot make
# one: Debian ships venv and ensurepip apart from the interpreter). $3 is another way out
# to name when that cannot be done.
make_venv() { # python, directory, alternative
	local python=$1 dir=$2 alternative=${3:-}
	if ! command -v "$python" >/dev/null; then
		[ "$python" = python3 ] || die "$python was not found${alternative:+; $alternative}"
		apt_install "Python 3 was not found." "$alternative" python3
	fi
	rm -rf "$dir"
	if ! "$python" -m venv "$dir" >/dev/null 2>&1; then
		rm -rf "$dir"
		apt_install "Python's venv module is missing." "$alternative" python3-venv
		"$python" -m venv "$dir" || die "$python -m venv failed even with python3-venv installed"
	fi
}

# Build the server binary ($1: debug or release) and print its path. The debug binary is the
# one the integration tests use: `cargo test` builds the server with the dev-dependencies'
# features, which `cargo build` would not share (it would compile a second copy of much of
# the dependency tree), and asking for one integration test builds it the same way, so after
# scripts/test nothing is compiled here.
build_trellis() { # profile
	local build
	case "$1" in
	debug) build=(cargo test --no-run --test binary) ;;
	release) build=(cargo build --release --bin trellis) ;;
	*) die "the build profile must be debug or release, not $1" ;;
	esac
	step "${build[*]}" >&2
	# Cargo names the binary in its JSON line for the `trellis` bin target.
	local exe
	exe=$("${build[@]}" --message-format=json-render-diagnostics |
		grep '"reason":"compiler-artifact"' |
		grep '"name":"trellis"' |
		grep '"kind":\["bin"\]' |
		sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
	[ -n "$exe" ] && [ -x "$exe" ] || die "cargo did not report the trellis binary it built"
	printf '%s\n' "$exe"
}

# Servers started by start_trellis_server, by name: process, data directory, client API URL.
declare -A trellis_pids=() trellis_dirs=() trellis_bases=()

# Start a Trellis server named $1 (the suite's own name for it) from the binary $2 for a
# client suite, with a new data directory under the temporary directory (the managed
# Postgres runs as an unprivileged user when this runs as root, and must reach it whatever
# the checkout's permissions), logging to $3: open registration, rate limits well above
# what scripted clients need, the client API on 127.0.0.1. Further arguments are
# VAR=value settings that override those (see start_federating_trellis). The client
# listener takes a port it picks itself (port 0), read back from the log, so no other
# process can take the port between choosing and binding it. Records the server in
# trellis_pids, trellis_dirs and trellis_bases (its client API's URL); stop_trellis stops it.
start_trellis_server() { # name, binary, log, [VAR=value...]
	local name=$1 bin=$2 log=$3
	shift 3
	local data
	data=$(mktemp -d "${TMPDIR:-/tmp}/trellis-suite.XXXXXX")
	chmod 755 "$data"
	trellis_dirs[$name]=$data
	# Emptied here, before the server starts: the loop below must never read the address
	# an earlier run left in the log, before the server's own redirection truncates it.
	: >"$log"
	# RUST_LOG would override the log level, and the line read back below is logged at info.
	env -u RUST_LOG TRELLIS_SERVER_NAME=localhost \
		TRELLIS_DATA_DIR="$data" \
		TRELLIS_LISTENERS__CLIENT__ADDRESS=127.0.0.1 \
		TRELLIS_LISTENERS__CLIENT__PORT=0 \
		TRELLIS_LISTENERS__FEDERATION__ENABLED=false \
		TRELLIS_REGISTRATION__ENABLED=true \
		TRELLIS_REGISTRATION__OPEN_WITHOUT_VERIFICATION=true \
		TRELLIS_LOG__FORMAT=json \
		TRELLIS_LOG__LEVEL="info,trellis::http=debug,ruma_state_res=warn" \
		TRELLIS_RATE_LIMITS__LOGIN_PER_IP__BURST=1000 \
		TRELLIS_RATE_LIMITS__LOGIN_PER_USER__BURST=1000 \
		TRELLIS_RATE_LIMITS__REGISTER_PER_IP__BURST=1000 \
		"$@" \
		"$bin" serve >"$log" 2>&1 &
	local pid=$!
	trellis_pids[$name]=$pid
	local addr=""
	for _ in $(seq 1200); do
		kill -0 "$pid" 2>/dev/null || break
		addr=$(sed -n 's/.*"message":"Trellis is listening".*"client_addr":"\([^"]*\)".*/\1/p' "$log" | head -n 1)
		[ -n "$addr" ] && break
		sleep 0.1
	done
	if [ -z "$addr" ]; then
		tail -n 40 "$log" >&2
		die "Trellis ($name) did not start (its log is above)"
	fi
	trellis_bases[$name]="http://$addr"
	echo "Trellis ($name) is up on http://$addr (log: $log)"
}

# Start Trellis ($1, the binary) for a client suite, logging to $2: start_trellis_server
# with no federation. Sets `trellis_pid`, `trellis_data` and `trellis_base`; stop it with
# stop_trellis.
start_trellis() { # binary, log
	start_trellis_server main "$1" "$2"
	trellis_pid=${trellis_pids[main]}
	trellis_data=${trellis_dirs[main]}
	trellis_base=${trellis_bases[main]}
}

# Start a Trellis server named $1 from the binary $3 that federates with others started the
# same way, logging to $4: its server name is the loopback address $2 (127.0.0.2, say),
# whose clients' API listens there on a port it picks itself and whose federation listener
# serves TLS (a self-signed certificate made with openssl) on that address's port 8448,
# where other servers look for an IP literal without a port. Distinct addresses give each
# server the same well-known port without a port chosen before it is bound; 127.0.0.1 is
# left to scripts/run. Outbound federation may reach loopback and does not check
# certificates: switches for this test setup only.
start_federating_trellis() { # name, address, binary, log
	local name=$1 address=$2 bin=$3 log=$4
	command -v openssl >/dev/null ||
		apt_install "openssl (for the federation listeners' certificates) was not found." "" openssl
	local certs
	certs=$(mktemp -d "${TMPDIR:-/tmp}/trellis-suite-tls.XXXXXX")
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
		-subj "/CN=$address" -addext "subjectAltName=IP:$address" \
		-keyout "$certs/tls.key" -out "$certs/tls.crt" 2>/dev/null ||
		die "openssl could not make a certificate for $address"
	trellis_certs+=("$certs")
	start_trellis_server "$name" "$bin" "$log" \
		TRELLIS_SERVER_NAME="$address" \
		TRELLIS_LISTENERS__CLIENT__ADDRESS="$address" \
		TRELLIS_LISTENERS__FEDERATION__ENABLED=true \
		TRELLIS_LISTENERS__FEDERATION__ADDRESS="$address" \
		TRELLIS_LISTENERS__FEDERATION__PORT=8448 \
		TRELLIS_LISTENERS__FEDERATION__TLS_CERTIFICATE="$certs/tls.crt" \
		TRELLIS_LISTENERS__FEDERATION__TLS_PRIVATE_KEY="$certs/tls.key" \
		TRELLIS_FEDERATION__VERIFY_TLS=false \
		TRELLIS_FEDERATION__IP_RANGE_ALLOWLIST=127.0.0.0/8 \
		TRELLIS_FEDERATION__MAX_RETRY_INTERVAL_SECS=2
}

# Certificate directories made by start_federating_trellis, removed by stop_trellis.
trellis_certs=()

# Stop every server start_trellis_server started: SIGTERM (Trellis drains requests and
# stops its managed Postgres), SIGKILL after 30 s; then remove their data directories.
stop_trellis() {
	local name pid
	for name in "${!trellis_pids[@]}"; do
		pid=${trellis_pids[$name]}
		if kill -0 "$pid" 2>/dev/null; then
			kill -TERM "$pid" 2>/dev/null || true
		fi
	done
	for name in "${!trellis_pids[@]}"; do
		pid=${trellis_pids[$name]}
		for _ in $(seq 300); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			echo "${script_name:-scripts}: Trellis ($name) did not stop within 30s; killing it" >&2
			kill -KILL "$pid" 2>/dev/null || true
		fi
		wait "$pid" 2>/dev/null || true
		unset "trellis_pids[$name]"
	done
	for name in "${!trellis_dirs[@]}"; do
		[ -d "${trellis_dirs[$name]}" ] && rm -rf "${trellis_dirs[$name]}"
		unset "trellis_dirs[$name]"
	done
	local dir
	for dir in "${trellis_certs[@]}"; do
		rm -rf "$dir"
	done
	trellis_certs=()
	trellis_pid=""
	trellis_data=""
}
