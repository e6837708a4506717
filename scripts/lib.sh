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
