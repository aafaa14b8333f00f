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

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
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

	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	int sndbuf = 32 << 20;
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof sndbuf) < 0) {
		perror("socket/SO_SNDBUFFORCE");
		return 1;
	}
	if (connect(fd, (struct sockaddr *)&dst, sizeof dst) < 0) {
		perror("connect");
		return 1;
	}
	unsigned segments = getenv("UDP_SEGMENTS") ? (unsigned)atoi(getenv("UDP_SEGMENTS")) : 1;
	if (segments < 1 || segments > 64 || segments * (size + 28) > 65000) {
		fprintf(stderr, "udp_sender: UDP_SEGMENTS 1..64 and at most 65000 bytes per message\n");
		return 2;
	}
	if (segments > 1) {
		int gso_size = (int)size;
		if (setsockopt(fd, IPPROTO_UDP, UDP_SEGMENT, &gso_size, sizeof gso_size) < 0) {
			perror("UDP_SEGMENT");
			return 1;
		}
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
	double start = now(), end = start + secs, t = start;
	while (t < end && (max == 0 || sent < max)) {
		unsigned n = BATCH;
		if (max && (max - sent + segments - 1) / segments < n)
			n = (unsigned)((max - sent + segments - 1) / segments);
		int rc = sendmmsg(fd, msgs, n, 0);
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
