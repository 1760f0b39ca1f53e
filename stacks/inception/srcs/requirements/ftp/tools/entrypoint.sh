#!/bin/sh
# vsftpd's first start: the FTP account (FTP_USER, password from FTP_PASSWORD_FILE) with the WordPress
# volume as its home and www-data's uid, so uploads belong to WordPress; and a self-signed certificate
# for FTPS. Then the command (vsftpd in the foreground, under `init: true`) replaces this shell.
set -eu
user=${FTP_USER:?FTP_USER is required}
password=${FTP_PASSWORD:-}
if [ -z "$password" ] && [ -n "${FTP_PASSWORD_FILE:-}" ]; then
    password=$(cat "$FTP_PASSWORD_FILE")
fi
[ -n "$password" ] || { echo "entrypoint: FTP_PASSWORD or FTP_PASSWORD_FILE is required" >&2; exit 1; }

if ! id "$user" >/dev/null 2>&1; then
    # the same uid and gid as www-data (33): files uploaded over FTP are WordPress's own
    useradd --non-unique --uid 33 --gid 33 --home-dir /var/www/html --no-create-home \
        --shell /bin/bash "$user"
fi
echo "$user:$password" | chpasswd
echo "$user" >/etc/vsftpd.userlist

if [ ! -s /etc/vsftpd/ssl/vsftpd.crt ]; then
    mkdir -p /etc/vsftpd/ssl
    openssl req -x509 -nodes -newkey rsa:2048 -days 365 \
        -keyout /etc/vsftpd/ssl/vsftpd.key -out /etc/vsftpd/ssl/vsftpd.crt \
        -subj "/C=FR/L=Paris/O=42/OU=inception/CN=ftp" 2>/dev/null
    chmod 600 /etc/vsftpd/ssl/vsftpd.key
fi
mkdir -p /var/run/vsftpd/empty /var/www/html
exec "$@"
