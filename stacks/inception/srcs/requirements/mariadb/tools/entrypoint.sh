#!/bin/sh
# MariaDB's first start: make the system tables if the data volume has none, then, once, create the
# WordPress database and its user from the secrets and give root a password (no root login without
# it, not even over the local socket). Later starts skip both. Then the command (mariadbd in the
# foreground) replaces this shell as PID 1.
set -eu

secret() {  # secret NAME: the value of $NAME, else of the file named by $NAME_FILE
    eval "value=\${$1:-}"
    eval "file=\${$1_FILE:-}"
    if [ -z "$value" ] && [ -n "$file" ]; then
        value=$(cat "$file")
    fi
    if [ -z "$value" ]; then
        echo "entrypoint: $1 (or $1_FILE) is required" >&2
        exit 1
    fi
    printf '%s' "$value"
}

sql_string() {  # a value as the inside of a single-quoted SQL string
    printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e "s/'/''/g"
}

datadir=/var/lib/mysql
marker=$datadir/.inception-initialized
mkdir -p /run/mysqld "$datadir"
chown mysql:mysql /run/mysqld "$datadir"

if [ ! -e "$marker" ]; then
    database=$(secret MYSQL_DATABASE)
    user=$(secret MYSQL_USER)
    password=$(sql_string "$(secret MYSQL_PASSWORD)")
    root_password=$(sql_string "$(secret MYSQL_ROOT_PASSWORD)")
    if [ ! -d "$datadir/mysql" ]; then
        echo "entrypoint: creating the system tables in $datadir"
        # --rpm, as the official image does: no DNS check of the hostname (a container may have none)
        mariadb-install-db --user=mysql --datadir="$datadir" --rpm --skip-test-db --skip-name-resolve \
            --auth-root-authentication-method=normal >/dev/null
    fi
    echo "entrypoint: creating database '$database' and user '$user'"
    init=$(mktemp)
    cat >"$init" <<SQL
FLUSH PRIVILEGES;
-- only root@localhost stays: no anonymous users, no password-less root@127.0.0.1, root@::1 or
-- root@<hostname>, no mysql@localhost (a socket-authenticated superuser)
DELETE FROM mysql.global_priv WHERE Host <> 'localhost' OR User NOT IN ('root', 'mariadb.sys');
DELETE FROM mysql.proxies_priv WHERE Host <> 'localhost';
FLUSH PRIVILEGES;
DROP DATABASE IF EXISTS test;
ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('$root_password');
CREATE DATABASE IF NOT EXISTS \`$database\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE USER IF NOT EXISTS '$user'@'%' IDENTIFIED BY '$password';
ALTER USER '$user'@'%' IDENTIFIED BY '$password';
GRANT ALL PRIVILEGES ON \`$database\`.* TO '$user'@'%';
FLUSH PRIVILEGES;
SQL
    chmod 600 "$init"
    # --bootstrap runs the statements without networking and exits: no background server to wait for
    if ! mariadbd --user=mysql --datadir="$datadir" --bootstrap --skip-networking <"$init"; then
        rm -f "$init"
        echo "entrypoint: initialisation failed" >&2
        exit 1
    fi
    rm -f "$init"
    touch "$marker"
    chown mysql:mysql "$marker"
fi

exec "$@"
