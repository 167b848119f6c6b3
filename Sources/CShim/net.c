#define _GNU_SOURCE
#include "airlock_net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

int airlock_interface_up(const char *name, unsigned int ipv4, unsigned int prefix) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    struct ifreq request;
    memset(&request, 0, sizeof request);
    strncpy(request.ifr_name, name, IFNAMSIZ - 1);
    int result = 0;
    if (ipv4 != 0) {
        struct sockaddr_in *address = (struct sockaddr_in *)&request.ifr_addr;
        address->sin_family = AF_INET;
        address->sin_addr.s_addr = ipv4;
        if (ioctl(fd, SIOCSIFADDR, &request) != 0) { result = -errno; goto done; }
        struct sockaddr_in *mask = (struct sockaddr_in *)&request.ifr_netmask;
        mask->sin_family = AF_INET;
        mask->sin_addr.s_addr = prefix == 0 ? 0 : htonl(0xffffffffu << (32 - (prefix > 32 ? 32 : prefix)));
        if (ioctl(fd, SIOCSIFNETMASK, &request) != 0) { result = -errno; goto done; }
    }
    if (ioctl(fd, SIOCGIFFLAGS, &request) != 0) { result = -errno; goto done; }
    request.ifr_flags |= IFF_UP | IFF_RUNNING;
    if (ioctl(fd, SIOCSIFFLAGS, &request) != 0) { result = -errno; goto done; }
done:
    close(fd);
    return result;
}

int airlock_default_route(const char *name) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    struct rtentry route;
    memset(&route, 0, sizeof route);
    ((struct sockaddr_in *)&route.rt_dst)->sin_family = AF_INET;
    ((struct sockaddr_in *)&route.rt_genmask)->sin_family = AF_INET;
    ((struct sockaddr_in *)&route.rt_gateway)->sin_family = AF_INET;
    route.rt_flags = RTF_UP;
    char device[IFNAMSIZ];
    strncpy(device, name, IFNAMSIZ - 1);
    device[IFNAMSIZ - 1] = 0;
    route.rt_dev = device;
    int result = ioctl(fd, SIOCADDRT, &route) == 0 ? 0 : -errno;
    close(fd);
    return result;
}
