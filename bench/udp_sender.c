/*
 * The traffic source of the UDP benchmarks: fixed-size datagrams to one
 * address, sendmmsg in batches, from a socket with a 32 MiB send buffer
 * (packets waiting in the queue count against it: a small one would make the
 * sender wait instead of letting the queue overflow).
 *
 *   udp_sender DST_IP PORT PAYLOAD_BYTES SECONDS [MAX_PACKETS]
 *
 * Stops after SECONDS or MAX_PACKETS (0: no limit); prints
 * "<packets sent> <seconds>" on stdout.
 *
 * With UDP_SEGMENTS set in the environment (e.g. 16), each message is a UDP
 * GSO buffer of that many datagrams (UDP_SEGMENT): the kernel splits it when it
 * queues it, so one core offers several times more packets per second than
 * with one datagram per message. Counts are in datagrams either way.
 *
 * With UDP_SOURCES set (1..64), the sender uses that many sockets, bound to
 * the source addresses 127.0.0.2, 127.0.0.3, ..., and takes them in turn, one
 * sendmmsg call each: `-j NFQUEUE --queue-balance` picks a queue by a hash of
 * the addresses (not the ports), so one source would fill only one queue.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define BATCH 64
#define MAX_SOURCES 64

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/*
 * A UDP socket connected to dst, with the large send buffer, bound to source
 * address `source` (host order; 0: any), sending UDP GSO buffers of
 * `segments` datagrams when that is > 1. Returns -1 after saying why.
 */
static int open_socket(const struct sockaddr_in *dst, unsigned source, unsigned segments, size_t size)
{
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	int sndbuf = 32 << 20;
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof sndbuf) < 0) {
		perror("socket/SO_SNDBUFFORCE");
		return -1;
	}
	if (source) {
		struct sockaddr_in src = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(source)};
		if (bind(fd, (const struct sockaddr *)&src, sizeof src) < 0) {
			perror("bind");
			return -1;
		}
	}
	if (connect(fd, (const struct sockaddr *)dst, sizeof *dst) < 0) {
		perror("connect");
		return -1;
	}
	if (segments > 1) {
		int gso_size = (int)size;
		if (setsockopt(fd, IPPROTO_UDP, UDP_SEGMENT, &gso_size, sizeof gso_size) < 0) {
			perror("UDP_SEGMENT");
			return -1;
		}
	}
	return fd;
}

int main(int argc, char **argv)
{
	if (argc < 5) {
		fprintf(stderr, "usage: udp_sender DST_IP PORT PAYLOAD_BYTES SECONDS [MAX_PACKETS]\n");
		return 2;
	}
	struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
	if (inet_pton(AF_INET, argv[1], &dst.sin_addr) != 1) {
		fprintf(stderr, "udp_sender: bad address %s\n", argv[1]);
		return 2;
	}
	size_t size = strtoul(argv[3], NULL, 10);
	double secs = atof(argv[4]);
	unsigned long long max = argc > 5 ? strtoull(argv[5], NULL, 10) : 0;
	if (size < 1 || size > 65000 || secs <= 0 || secs > 3600) {
		fprintf(stderr, "udp_sender: payload 1..65000 bytes, 0 < seconds <= 3600\n");
		return 2;
	}

	unsigned segments = getenv("UDP_SEGMENTS") ? (unsigned)atoi(getenv("UDP_SEGMENTS")) : 1;
	if (segments < 1 || segments > 64 || segments * (size + 28) > 65000) {
		fprintf(stderr, "udp_sender: UDP_SEGMENTS 1..64 and at most 65000 bytes per message\n");
		return 2;
	}
	int sources = getenv("UDP_SOURCES") ? atoi(getenv("UDP_SOURCES")) : 0;
	if (sources < 0 || sources > MAX_SOURCES) {
		fprintf(stderr, "udp_sender: UDP_SOURCES 0..%d\n", MAX_SOURCES);
		return 2;
	}
	int fds[MAX_SOURCES];
	int nfds = sources > 0 ? sources : 1;
	for (int i = 0; i < nfds; i++) {
		fds[i] = open_socket(&dst, sources > 0 ? 0x7f000002u + (unsigned)i : 0, segments, size);
		if (fds[i] < 0)
			return 1;
	}
	char *payload = calloc(segments, size);
	struct iovec iov = {.iov_base = payload, .iov_len = size * segments};
	struct mmsghdr msgs[BATCH];
	memset(msgs, 0, sizeof msgs);
	for (int i = 0; i < BATCH; i++) {
		msgs[i].msg_hdr.msg_iov = &iov;
		msgs[i].msg_hdr.msg_iovlen = 1;
	}

	unsigned long long sent = 0;
	int turn = 0;
	double start = now(), end = start + secs, t = start;
	while (t < end && (max == 0 || sent < max)) {
		unsigned n = BATCH;
		if (max && (max - sent + segments - 1) / segments < n)
			n = (unsigned)((max - sent + segments - 1) / segments);
		int rc = sendmmsg(fds[turn], msgs, n, 0);
		turn = (turn + 1) % nfds;
		if (rc > 0)
			sent += (unsigned long long)rc * segments;
		else if (rc < 0 && errno != EINTR && errno != ENOBUFS && errno != EAGAIN && errno != ECONNREFUSED) {
			perror("sendmmsg");
			return 1;
		}
		t = now();
	}
	printf("%llu %.6f\n", sent, t - start);
	return 0;
}
