#!/bin/sh
# nginx's first start: a self-signed certificate for $DOMAIN_NAME and *.$DOMAIN_NAME (adminer., static.,
# status.) unless one is already in /etc/nginx/ssl (a volume, so it survives re-creation). Then the
# command (nginx in the foreground) replaces this shell as PID 1.
set -eu
domain=${DOMAIN_NAME:-localhost}
crt=/etc/nginx/ssl/inception.crt
key=/etc/nginx/ssl/inception.key
if [ ! -s "$crt" ] || [ ! -s "$key" ]; then
    mkdir -p /etc/nginx/ssl
    openssl req -x509 -nodes -newkey rsa:2048 -days 365 \
        -keyout "$key" -out "$crt" \
        -subj "/C=FR/L=Paris/O=42/OU=inception/CN=$domain" \
        -addext "subjectAltName=DNS:$domain,DNS:*.$domain" 2>/dev/null
    chmod 600 "$key"
    echo "entrypoint: made a self-signed certificate for $domain"
fi
exec "$@"
