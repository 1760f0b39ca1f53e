<?php
/**
 * Object cache drop-in: WordPress's object cache kept in redis (Debian's php-redis), for the inception
 * stack, where the usual plugin cannot be downloaded. Copied to wp-content/object-cache.php by the
 * entrypoint. Keys are "<WP_CACHE_KEY_SALT>:[<blog>:]<group>:<key>"; values are PHP-serialized. Without
 * redis (WP_REDIS_HOST empty or the server unreachable) it is a per-request cache, like WordPress's own.
 */

defined('ABSPATH') || exit;

class WP_Object_Cache
{
    /** @var array<string, mixed> this request's copy */
    private $cache = [];
    /** @var Redis|null */
    private $redis = null;
    private $global_groups = [];
    private $non_persistent_groups = [];
    private $blog_prefix = '';
    private $prefix = '';
    private $multisite = false;
    public $cache_hits = 0;
    public $cache_misses = 0;

    public function __construct()
    {
        $this->multisite = is_multisite();
        $this->blog_prefix = $this->multisite ? get_current_blog_id() . ':' : '';
        $this->prefix = (defined('WP_CACHE_KEY_SALT') && WP_CACHE_KEY_SALT ? WP_CACHE_KEY_SALT : 'wp') . ':';
        if (class_exists('Redis') && defined('WP_REDIS_HOST') && WP_REDIS_HOST) {
            try {
                $redis = new Redis();
                $port = defined('WP_REDIS_PORT') ? (int) WP_REDIS_PORT : 6379;
                if ($redis->connect(WP_REDIS_HOST, $port, 1.0)) {
                    $this->redis = $redis;
                }
            } catch (Throwable $error) {
                $this->redis = null;
            }
        }
    }

    public function is_redis_connected(): bool
    {
        return $this->redis !== null;
    }

    private function key($key, string $group): string
    {
        $blog = isset($this->global_groups[$group]) ? '' : $this->blog_prefix;
        return $this->prefix . $blog . $group . ':' . $key;
    }

    private function persistent(string $group): bool
    {
        return $this->redis !== null && !isset($this->non_persistent_groups[$group]);
    }

    /** Runs a redis call; a failure drops redis for the rest of the request (the cache still works). */
    private function redis(callable $call, $fallback = false)
    {
        try {
            return $call($this->redis);
        } catch (Throwable $error) {
            $this->redis = null;
            return $fallback;
        }
    }

    private static function group($group): string
    {
        return ($group === '' || $group === null) ? 'default' : (string) $group;
    }

    private function exists(string $id, string $group): bool
    {
        if (array_key_exists($id, $this->cache)) {
            return true;
        }
        return $this->persistent($group) && (bool) $this->redis(static function ($r) use ($id) {
            return $r->exists($id);
        });
    }

    public function add($key, $data, $group = 'default', $expire = 0)
    {
        if (wp_suspend_cache_addition()) {
            return false;
        }
        $group = self::group($group);
        if ($this->exists($this->key($key, $group), $group)) {
            return false;
        }
        return $this->set($key, $data, $group, $expire);
    }

    public function add_multiple(array $data, $group = '', $expire = 0)
    {
        $out = [];
        foreach ($data as $key => $value) {
            $out[$key] = $this->add($key, $value, $group, $expire);
        }
        return $out;
    }

    public function replace($key, $data, $group = 'default', $expire = 0)
    {
        $group = self::group($group);
        if (!$this->exists($this->key($key, $group), $group)) {
            return false;
        }
        return $this->set($key, $data, $group, $expire);
    }

    public function set($key, $data, $group = 'default', $expire = 0)
    {
        $group = self::group($group);
        $id = $this->key($key, $group);
        if (is_object($data)) {
            $data = clone $data;
        }
        $this->cache[$id] = $data;
        if ($this->persistent($group)) {
            $value = serialize($data);
            $expire = (int) $expire;
            $this->redis(static function ($r) use ($id, $value, $expire) {
                return $expire > 0 ? $r->setex($id, $expire, $value) : $r->set($id, $value);
            });
        }
        return true;
    }

    public function set_multiple(array $data, $group = '', $expire = 0)
    {
        $out = [];
        foreach ($data as $key => $value) {
            $out[$key] = $this->set($key, $value, $group, $expire);
        }
        return $out;
    }

    public function get($key, $group = 'default', $force = false, &$found = null)
    {
        $group = self::group($group);
        $id = $this->key($key, $group);
        if (!$force && array_key_exists($id, $this->cache)) {
            $found = true;
            $this->cache_hits++;
            $value = $this->cache[$id];
            return is_object($value) ? clone $value : $value;
        }
        if ($this->persistent($group)) {
            $raw = $this->redis(static function ($r) use ($id) {
                return $r->get($id);
            });
            if (is_string($raw)) {
                $value = unserialize($raw);
                $this->cache[$id] = $value;
                $found = true;
                $this->cache_hits++;
                return is_object($value) ? clone $value : $value;
            }
        }
        $found = false;
        $this->cache_misses++;
        return false;
    }

    public function get_multiple($keys, $group = 'default', $force = false)
    {
        $out = [];
        foreach ($keys as $key) {
            $out[$key] = $this->get($key, $group, $force);
        }
        return $out;
    }

    public function delete($key, $group = 'default', $deprecated = false)
    {
        $group = self::group($group);
        $id = $this->key($key, $group);
        $had = array_key_exists($id, $this->cache);
        unset($this->cache[$id]);
        if ($this->persistent($group)) {
            $had = (bool) $this->redis(static function ($r) use ($id) {
                return $r->del($id);
            }) || $had;
        }
        return $had;
    }

    public function delete_multiple(array $keys, $group = '')
    {
        $out = [];
        foreach ($keys as $key) {
            $out[$key] = $this->delete($key, $group);
        }
        return $out;
    }

    public function incr($key, $offset = 1, $group = 'default')
    {
        $group = self::group($group);
        $value = $this->get($key, $group, false, $found);
        if (!$found) {
            return false;
        }
        $value = max(0, (is_numeric($value) ? (int) $value : 0) + (int) $offset);
        $this->set($key, $value, $group);
        return $value;
    }

    public function decr($key, $offset = 1, $group = 'default')
    {
        return $this->incr($key, -(int) $offset, $group);
    }

    public function flush()
    {
        $this->cache = [];
        if ($this->redis !== null) {
            $this->delete_matching($this->prefix . '*');
        }
        return true;
    }

    public function flush_runtime()
    {
        $this->cache = [];
        return true;
    }

    public function flush_group($group)
    {
        $group = self::group($group);
        $match = $this->key('', $group);
        foreach (array_keys($this->cache) as $id) {
            if (strpos($id, $match) === 0) {
                unset($this->cache[$id]);
            }
        }
        if ($this->persistent($group)) {
            $this->delete_matching($match . '*');
        }
        return true;
    }

    private function delete_matching(string $pattern): void
    {
        $this->redis(static function ($r) use ($pattern) {
            $cursor = null;
            do {
                $keys = $r->scan($cursor, $pattern, 500);
                if (is_array($keys) && $keys) {
                    $r->del($keys);
                }
            } while ($cursor);
            return true;
        });
    }

    public function add_global_groups($groups)
    {
        foreach ((array) $groups as $group) {
            $this->global_groups[$group] = true;
        }
    }

    public function add_non_persistent_groups($groups)
    {
        foreach ((array) $groups as $group) {
            $this->non_persistent_groups[$group] = true;
        }
    }

    public function switch_to_blog($blog_id)
    {
        $this->blog_prefix = $this->multisite ? (int) $blog_id . ':' : '';
    }

    public function close()
    {
        if ($this->redis !== null) {
            $this->redis(static function ($r) {
                return $r->close();
            });
            $this->redis = null;
        }
        return true;
    }

    public function stats()
    {
        echo '<p><strong>Cache hits:</strong> ' . (int) $this->cache_hits . '<br />';
        echo '<strong>Cache misses:</strong> ' . (int) $this->cache_misses . '<br />';
        echo '<strong>Redis:</strong> ' . ($this->redis !== null ? 'connected' : 'not connected') . '</p>';
    }
}

function wp_cache_init()
{
    $GLOBALS['wp_object_cache'] = new WP_Object_Cache();
}

function wp_cache_supports($feature)
{
    return in_array($feature, ['add_multiple', 'set_multiple', 'get_multiple', 'delete_multiple',
        'flush_runtime', 'flush_group'], true);
}

function wp_cache_add($key, $data, $group = '', $expire = 0)
{
    return $GLOBALS['wp_object_cache']->add($key, $data, $group, (int) $expire);
}

function wp_cache_add_multiple(array $data, $group = '', $expire = 0)
{
    return $GLOBALS['wp_object_cache']->add_multiple($data, $group, (int) $expire);
}

function wp_cache_replace($key, $data, $group = '', $expire = 0)
{
    return $GLOBALS['wp_object_cache']->replace($key, $data, $group, (int) $expire);
}

function wp_cache_set($key, $data, $group = '', $expire = 0)
{
    return $GLOBALS['wp_object_cache']->set($key, $data, $group, (int) $expire);
}

function wp_cache_set_multiple(array $data, $group = '', $expire = 0)
{
    return $GLOBALS['wp_object_cache']->set_multiple($data, $group, (int) $expire);
}

function wp_cache_get($key, $group = '', $force = false, &$found = null)
{
    return $GLOBALS['wp_object_cache']->get($key, $group, $force, $found);
}

function wp_cache_get_multiple($keys, $group = '', $force = false)
{
    return $GLOBALS['wp_object_cache']->get_multiple($keys, $group, $force);
}

function wp_cache_delete($key, $group = '')
{
    return $GLOBALS['wp_object_cache']->delete($key, $group);
}

function wp_cache_delete_multiple(array $keys, $group = '')
{
    return $GLOBALS['wp_object_cache']->delete_multiple($keys, $group);
}

function wp_cache_incr($key, $offset = 1, $group = '')
{
    return $GLOBALS['wp_object_cache']->incr($key, $offset, $group);
}

function wp_cache_decr($key, $offset = 1, $group = '')
{
    return $GLOBALS['wp_object_cache']->decr($key, $offset, $group);
}

function wp_cache_flush()
{
    return $GLOBALS['wp_object_cache']->flush();
}

function wp_cache_flush_runtime()
{
    return $GLOBALS['wp_object_cache']->flush_runtime();
}

function wp_cache_flush_group($group)
{
    return $GLOBALS['wp_object_cache']->flush_group($group);
}

function wp_cache_close()
{
    return $GLOBALS['wp_object_cache']->close();
}

function wp_cache_add_global_groups($groups)
{
    $GLOBALS['wp_object_cache']->add_global_groups($groups);
}

function wp_cache_add_non_persistent_groups($groups)
{
    $GLOBALS['wp_object_cache']->add_non_persistent_groups($groups);
}

function wp_cache_switch_to_blog($blog_id)
{
    $GLOBALS['wp_object_cache']->switch_to_blog($blog_id);
}

function wp_cache_reset()
{
    _deprecated_function(__FUNCTION__, '3.5.0', 'wp_cache_switch_to_blog()');
    $GLOBALS['wp_object_cache']->flush_runtime();
}
