/*
 * The baseline consumer: libnetfilter_queue's classic API (nfq_open,
 * nfq_create_queue, a callback that calls nfq_set_verdict for every packet),
 * as most C programs that use NFQUEUE are written.
 *
 *   nfq_classic [--gso] [--recv-offset BYTES] QUEUE_NUM
 *
 * Accepts every packet; on SIGTERM or SIGINT prints the packet count and exits 0.
 *
 * --recv-offset receives into a buffer that starts BYTES (0..4095) into a
 * page, instead of the static buffer where the linker puts it: the kernel
 * copies every datagram there, and how fast depends on where (see the
 * performance guide), which a benchmark can compare with this alone changed.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/netfilter.h>
#include <libnetfilter_queue/libnetfilter_queue.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>

#define RCVBUF (8 << 20) /* the same as the Rust consumers */

static volatile sig_atomic_t stop;
static unsigned long long count;

static void on_signal(int sig) { (void)sig; stop = 1; }

static int cb(struct nfq_q_handle *qh, struct nfgenmsg *msg, struct nfq_data *nfa, void *data)
{
	(void)msg;
	(void)data;
	struct nfqnl_msg_packet_hdr *ph = nfq_get_msg_packet_hdr(nfa);
	if (!ph)
		return -1;
	count++;
	return nfq_set_verdict(qh, ntohl(ph->packet_id), NF_ACCEPT, 0, NULL);
}

int main(int argc, char **argv)
{
	int gso = 0;
	long offset = -1;
	for (int i = 1; i < argc - 1; i++) {
		if (strcmp(argv[i], "--gso") == 0) {
			gso = 1;
		} else if (strcmp(argv[i], "--recv-offset") == 0 && i + 1 < argc - 1) {
			offset = strtol(argv[++i], NULL, 10);
		} else {
			argc = 0;
		}
	}
	if (argc < 2 || offset < -1 || offset > 4095) {
		fprintf(stderr, "usage: nfq_classic [--gso] [--recv-offset 0..4095] QUEUE_NUM\n");
		return 2;
	}
	int queue = atoi(argv[argc - 1]);

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal; /* no SA_RESTART: recv returns EINTR */
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);

	struct nfq_handle *h = nfq_open();
	if (!h) {
		perror("nfq_open");
		return 1;
	}
	struct nfq_q_handle *qh = nfq_create_queue(h, queue, cb, NULL);
	if (!qh) {
		perror("nfq_create_queue");
		return 1;
	}
	if (nfq_set_mode(qh, NFQNL_COPY_PACKET, 0xffff) < 0) {
		perror("nfq_set_mode");
		return 1;
	}
	if (gso && nfq_set_queue_flags(qh, NFQA_CFG_F_GSO, NFQA_CFG_F_GSO) < 0) {
		perror("nfq_set_queue_flags");
		return 1;
	}
	int fd = nfq_fd(h);
	int rcvbuf = RCVBUF;
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) < 0)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
	/* Wake up now and then to see a signal that came between check and recv. */
	struct timeval tv = {.tv_sec = 0, .tv_usec = 100000};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	fprintf(stderr, "nfq_classic: bound queue %d\n", queue);

	static char buf[128 * 1024] __attribute__((aligned(8)));
	/* Made only when asked for, so that the static buffer stays where it was. */
	char *into = buf;
	if (offset >= 0) {
		char *paged = aligned_alloc(4096, 4096 + sizeof buf);
		if (!paged) {
			perror("aligned_alloc");
			return 1;
		}
		into = paged + offset;
	}
	while (!stop) {
		ssize_t n = recv(fd, into, sizeof buf, 0);
		if (n >= 0) {
			nfq_handle_packet(h, into, (int)n);
		} else if (errno != EINTR && errno != EAGAIN && errno != ENOBUFS) {
			perror("recv");
			break;
		}
	}
	printf("%llu\n", count);
	fflush(stdout);
	nfq_destroy_queue(qh);
	nfq_close(h);
	return 0;
}
