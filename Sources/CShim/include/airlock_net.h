#ifndef AIRLOCK_NET_H
#define AIRLOCK_NET_H

/// Brings the interface `name` up; when `ipv4` (network byte order) is not 0, gives it that
/// address with a `prefix`-bit netmask first. Returns 0 or -errno. (Guest only.)
int airlock_interface_up(const char *name, unsigned int ipv4, unsigned int prefix);

/// Adds the IPv4 default route through the interface `name`. Returns 0 or -errno.
int airlock_default_route(const char *name);

#endif
