#!/bin/sh
# WordPress's first start, then every start:
#  1. an empty volume gets the WordPress files (from Debian's package, unpacked in the image);
#  2. wp-config.php is written once: settings from the environment, fresh keys and salts; the
#     database password is read from its secret file at run time, never stored on the volume;
#  3. redis becomes the object cache (our drop-in wp-content/object-cache.php, php-redis);
#  4. once the database answers, wp-install.php installs the site with WordPress's own functions
#     (two users, neither an "admin", and one post) unless it is installed already;
#  5. the command (php-fpm in the foreground, port 9000) replaces this shell as PID 1.
set -eu
root=/var/www/html
lib=/usr/local/lib/inception

if [ ! -e "$root/wp-includes/version.php" ]; then
    echo "entrypoint: copying WordPress into $root"
    mkdir -p "$root"
    cp -a /usr/src/wordpress/. "$root/"
    chown -R www-data:www-data "$root"
fi

if [ ! -e "$root/wp-config.php" ]; then
    echo "entrypoint: writing wp-config.php"
    salts=$(php -r 'foreach (["AUTH_KEY", "SECURE_AUTH_KEY", "LOGGED_IN_KEY", "NONCE_KEY", "AUTH_SALT",
        "SECURE_AUTH_SALT", "LOGGED_IN_SALT", "NONCE_SALT"] as $k) {
        printf("define(%s, %s);\n", var_export($k, true), var_export(bin2hex(random_bytes(32)), true)); }')
    cat >"$root/wp-config.php" <<PHP
<?php
// Written by the inception stack's entrypoint. The settings come from the container's environment
// (php-fpm keeps it: clear_env = no); the database password from its secret file.
define('DB_NAME', getenv('MYSQL_DATABASE') ?: 'wordpress');
define('DB_USER', getenv('MYSQL_USER') ?: 'wordpress');
define('DB_PASSWORD', trim((string) @file_get_contents(getenv('WORDPRESS_DB_PASSWORD_FILE') ?: '/run/secrets/db_password')));
define('DB_HOST', getenv('WORDPRESS_DB_HOST') ?: 'mariadb:3306');
define('DB_CHARSET', 'utf8mb4');
define('DB_COLLATE', '');
if (getenv('WORDPRESS_URL')) {
    define('WP_HOME', rtrim(getenv('WORDPRESS_URL'), '/'));
    define('WP_SITEURL', WP_HOME);
}
// redis as the object cache (wp-content/object-cache.php); empty: a per-request cache only
define('WP_REDIS_HOST', getenv('WORDPRESS_REDIS_HOST') ?: '');
define('WP_REDIS_PORT', (int) (getenv('WORDPRESS_REDIS_PORT') ?: 6379));
define('WP_CACHE_KEY_SALT', DB_NAME);
// no internet here: refuse outgoing requests at once instead of waiting for timeouts
define('WP_HTTP_BLOCK_EXTERNAL', true);
define('AUTOMATIC_UPDATER_DISABLED', true);
define('FS_METHOD', 'direct');
define('WP_DEBUG', false);
$salts
\$table_prefix = 'wp_';
if (!defined('ABSPATH')) {
    define('ABSPATH', __DIR__ . '/');
}
require_once ABSPATH . 'wp-settings.php';
PHP
    chown www-data:www-data "$root/wp-config.php"
    chmod 640 "$root/wp-config.php"
fi

cp "$lib/object-cache.php" "$root/wp-content/object-cache.php"
chown www-data:www-data "$root/wp-content/object-cache.php"

php "$lib/wp-install.php" "$root"
exec "$@"
