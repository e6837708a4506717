# Shell functions shared by scripts/run, scripts/test and scripts/sdk-test; sourced, not run.
# The sourcing script defines die() (print a message and exit non-zero) and may define step()
# (announce a step); without step(), announcements are plain lines.

announce() {
	if declare -F step >/dev/null; then
		step "$@"
	else
		echo "$*"
	fi
}

# The same search as src/db/embedded.rs: PATH, /usr/lib/postgresql/*/bin, /usr/local/pgsql/bin.
postgres_found() {
	local dir
	local IFS=:
	for dir in $PATH /usr/lib/postgresql/*/bin /usr/local/pgsql/bin; do
		if [ -x "$dir/initdb" ] && [ -x "$dir/postgres" ]; then
			return 0
		fi
	done
	return 1
}

# Installs the Postgres server binaries with apt-get (as root, or through sudo) unless they are
# already there. $1 tells the user what to do instead when that is impossible, e.g.
# "set database.url in trellis.toml to use an existing server".
install_postgres() {
	postgres_found && return 0
	local instead=$1
	local missing="Postgres server binaries (initdb, postgres) were not found on PATH or in /usr/lib/postgresql/*/bin."
	local sudo=()
	if [ "$(id -u)" -ne 0 ]; then
		if command -v sudo >/dev/null && command -v apt-get >/dev/null; then
			sudo=(sudo)
		else
			die "$missing Install them with \`apt-get install postgresql\` (Debian/Ubuntu) as root, or $instead."
		fi
	fi
	command -v apt-get >/dev/null ||
		die "$missing Install your system's PostgreSQL server package, or $instead."
	announce "Installing the Postgres server binaries: apt-get install postgresql"
	"${sudo[@]}" apt-get update -qq
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends postgresql >/dev/null
	postgres_found || die "apt-get installed postgresql, but initdb and postgres are still not found"
}
