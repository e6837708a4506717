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

# Start Trellis ($1, the binary) for a client suite with a new data directory under the
# temporary directory (the managed Postgres runs as an unprivileged user when this runs as
# root, and must reach it whatever the checkout's permissions), logging to $2: loopback only,
# no federation listener, open registration, rate limits well above what scripted clients
# need. It listens on a port it picks itself (port 0), read back from its log, so no other
# process can take the port between choosing and binding it. Sets `trellis_pid`,
# `trellis_data` and `trellis_base`; stop it with stop_trellis.
start_trellis() { # binary, log
	local bin=$1 log=$2
	trellis_data=$(mktemp -d "${TMPDIR:-/tmp}/trellis-suite.XXXXXX")
	chmod 755 "$trellis_data"
	env TRELLIS_SERVER_NAME=localhost \
		TRELLIS_DATA_DIR="$trellis_data" \
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
		"$bin" serve >"$log" 2>&1 &
	trellis_pid=$!
	local addr=""
	for _ in $(seq 1200); do
		kill -0 "$trellis_pid" 2>/dev/null || break
		addr=$(sed -n 's/.*"message":"Trellis is listening".*"client_addr":"\([^"]*\)".*/\1/p' "$log" | head -n 1)
		[ -n "$addr" ] && break
		sleep 0.1
	done
	if [ -z "$addr" ]; then
		tail -n 40 "$log" >&2
		die "Trellis did not start (its log is above)"
	fi
	trellis_base="http://$addr"
	echo "Trellis is up on $trellis_base (log: $log)"
}

# Stop what start_trellis started: SIGTERM (Trellis drains requests and stops its managed
# Postgres), SIGKILL after 30 s; then remove its data directory.
stop_trellis() {
	if [ -n "${trellis_pid:-}" ] && kill -0 "$trellis_pid" 2>/dev/null; then
		kill -TERM "$trellis_pid" 2>/dev/null || true
		for _ in $(seq 300); do
			kill -0 "$trellis_pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$trellis_pid" 2>/dev/null; then
			echo "${script_name:-scripts}: Trellis did not stop within 30s; killing it" >&2
			kill -KILL "$trellis_pid" 2>/dev/null || true
		fi
		wait "$trellis_pid" 2>/dev/null || true
	fi
	trellis_pid=""
	if [ -n "${trellis_data:-}" ] && [ -d "$trellis_data" ]; then
		rm -rf "$trellis_data"
	fi
	trellis_data=""
}
