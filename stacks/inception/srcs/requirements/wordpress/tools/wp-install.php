<?php
/**
 * Installs WordPress once, with WordPress's own functions (what wp-admin/install.php does on its form),
 * instead of wp-cli, which Debian does not package. Run by the entrypoint at every start: it waits for
 * the database, does nothing when the site is installed, else installs it with
 *  - the administrator WP_ADMIN_USER (password from WP_ADMIN_PASSWORD_FILE),
 *  - an author WP_USER (password from WP_USER_PASSWORD_FILE),
 *  - one published post by the author (the sample post and page are removed).
 * Neither login may contain "admin". Usage: php wp-install.php [WORDPRESS_ROOT]
 */

if (PHP_SAPI !== 'cli') {
    exit(1);
}

function fail(string $message): void
{
    fwrite(STDERR, "wp-install: $message\n");
    exit(1);
}

function setting(string $name, ?string $default = null): string
{
    $value = getenv($name);
    if ($value === false || $value === '') {
        $file = getenv($name . '_FILE');
        if ($file !== false && $file !== '') {
            $read = @file_get_contents($file);
            if ($read === false) {
                fail("cannot read {$name}_FILE ($file)");
            }
            $value = trim($read);
        }
    }
    if ($value === false || $value === '') {
        if ($default === null) {
            fail("$name (or {$name}_FILE) is required");
        }
        $value = $default;
    }
    return $value;
}

$root = rtrim($argv[1] ?? '/var/www/html', '/');
$url = rtrim(setting('WORDPRESS_URL'), '/');
$admin = setting('WP_ADMIN_USER');
$author = setting('WP_USER');
foreach ([$admin, $author] as $login) {
    if (stripos($login, 'admin') !== false) {
        fail("the login '$login' contains 'admin': choose another one");
    }
}

// Wait for the database (depends_on makes it healthy first; after a restart of mariadb it may still be
// starting). The same settings as wp-config.php.
[$host, $port] = array_pad(explode(':', setting('WORDPRESS_DB_HOST', 'mariadb:3306'), 2), 2, '3306');
$dbUser = setting('MYSQL_USER');
$dbPassword = setting('WORDPRESS_DB_PASSWORD', trim((string) @file_get_contents('/run/secrets/db_password')));
$dbName = setting('MYSQL_DATABASE');
mysqli_report(MYSQLI_REPORT_OFF);
for ($try = 1; ; $try++) {
    $link = @mysqli_connect($host, $dbUser, $dbPassword, $dbName, (int) $port);
    if ($link) {
        mysqli_close($link);
        break;
    }
    if ($try >= 60) {
        fail("the database $dbName on $host:$port does not answer: " . mysqli_connect_error());
    }
    if ($try === 1) {
        fwrite(STDERR, "wp-install: waiting for the database on $host:$port\n");
    }
    sleep(1);
}

// Load WordPress the way wp-admin/install.php does.
$parts = parse_url($url);
$_SERVER['HTTP_HOST'] = $parts['host'] . (isset($parts['port']) ? ':' . $parts['port'] : '');
$_SERVER['SERVER_NAME'] = $parts['host'];
$_SERVER['REQUEST_URI'] = '/';
$_SERVER['HTTPS'] = ($parts['scheme'] ?? 'https') === 'https' ? 'on' : 'off';
define('WP_INSTALLING', true);
require $root . '/wp-load.php';

// The database is the truth: a cache left from an earlier database (say, after `make fclean`) must
// not answer "installed". Each start of WordPress begins with an empty object cache.
wp_cache_flush();
if (is_blog_installed()) {
    echo "wp-install: WordPress is already installed\n";
    exit(0);
}

// No mail server here: the "your new site" mail is skipped (the function is pluggable).
function wp_new_blog_notification($blog_title, $blog_url, $user_id, $password)
{
}

require_once ABSPATH . 'wp-admin/includes/upgrade.php';

// wp_install() probes pretty permalinks with an HTTP request to the site, which cannot answer
// while it is being installed: say a structure is set, so it skips the probe; it is set below.
$skipProbe = static function () {
    return '/%postname%/';
};
add_filter('pre_option_permalink_structure', $skipProbe);
$installed = wp_install(
    setting('WP_TITLE', 'Inception'),
    $admin,
    setting('WP_ADMIN_EMAIL'),
    true,
    '',
    wp_slash(setting('WP_ADMIN_PASSWORD')),
);
remove_filter('pre_option_permalink_structure', $skipProbe);
if (is_wp_error($installed) || empty($installed['user_id'])) {
    fail('wp_install failed' . (is_wp_error($installed) ? ': ' . $installed->get_error_message() : ''));
}
update_option('siteurl', $url);
update_option('home', $url);
update_option('blogdescription', 'WordPress on php-fpm, MariaDB and redis, run by composer');
update_option('permalink_structure', '/%postname%/');
flush_rewrite_rules(true);

$authorId = wp_create_user($author, setting('WP_USER_PASSWORD'), setting('WP_USER_EMAIL'));
if (is_wp_error($authorId)) {
    fail('wp_create_user failed: ' . $authorId->get_error_message());
}
(new WP_User($authorId))->set_role('author');

// One post of our own instead of the samples wp_install() makes.
foreach (['hello-world' => 'post', 'sample-page' => 'page'] as $slug => $type) {
    $sample = get_page_by_path($slug, OBJECT, $type);
    if ($sample) {
        wp_delete_post($sample->ID, true);
    }
}
$postId = wp_insert_post([
    'post_title' => 'Inception, without Docker',
    'post_content' => "<!-- wp:paragraph -->\n<p>This WordPress runs on php-fpm behind nginx (TLS 1.2 and 1.3"
        . " only), with MariaDB and redis, each in its own container built from debian:bookworm and run"
        . " by composer.</p>\n<!-- /wp:paragraph -->",
    'post_status' => 'publish',
    'post_author' => $authorId,
], true);
if (is_wp_error($postId)) {
    fail('wp_insert_post failed: ' . $postId->get_error_message());
}
wp_cache_flush();
echo "wp-install: installed $url with the users $admin (administrator) and $author (author)\n";
