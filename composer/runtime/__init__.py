"""The container runtime: namespaces, rootfs, mounts, capabilities, users, the fork-server and launcher.

Kept import-free: the fork-server (composer.runtime.forkserver) must load with the stdlib only, before
trio; the trio side lives in composer.runtime.launch.
"""
