#!/bin/sh
# Writes the stack's secrets as files (one random password per file) into DIR (default: the `secrets`
# folder next to `srcs`). Existing files are kept, so running it again changes nothing. The folder is
# private (700); the files are world-readable (644) because, as with Docker, a secret file is mounted
# with its host mode and the daemons that read it run as their own users (php-fpm as www-data).
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-$here/secrets}
mkdir -p "$dir"
chmod 700 "$dir"
umask 022
for name in db_password db_root_password wp_admin_password wp_user_password ftp_password; do
    file=$dir/$name.txt
    if [ ! -s "$file" ]; then
        # 24 characters from [A-Za-z0-9]: safe inside SQL, PHP and shell strings without quoting games
        LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c 24 >"$file"
        echo "generated $file"
    fi
done
