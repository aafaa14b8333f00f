/*
 * A batching consumer on libnetfilter_queue's libmnl-based API: read every
 * packet that is waiting, and accept them with one NFQNL_MSG_VERDICT_BATCH
 * message every BATCH packets or when the socket has nothing more to read.
 *
 *   nfq_batch [--gso] QUEUE_NUM
 *
 * Accepts every packet; on SIGTERM or SIGINT prints the packet count and exits 0.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <libmnl/libmnl.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_queue.h>
#include <libnetfilter_queue/libnetfilter_queue.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define RCVBUF (8 << 20)
#define BATCH 64

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

struct state {
	struct mnl_socket *nl;
	int queue;
	unsigned long long count;
	unsigned pending;
	uint32_t last_id;
};

static void send_batch(struct state *s)
{
	char buf[256] __attribute__((aligned(8)));
	struct nlmsghdr *nlh = nfq_nlmsg_put(buf, NFQNL_MSG_VERDICT_BATCH, s->queue);
	nfq_nlmsg_verdict_put(nlh, s->last_id, NF_ACCEPT);
	if (mnl_socket_sendto(s->nl, nlh, nlh->nlmsg_len) < 0)
		perror("mnl_socket_sendto");
	s->pending = 0;
}

static int packet_cb(const struct nlmsghdr *nlh, void *data)
{
	struct state *s = data;
	struct nlattr *attr[NFQA_MAX + 1] = {0};
	if (nfq_nlmsg_parse(nlh, attr) < 0 || !attr[NFQA_PACKET_HDR])
		return MNL_CB_OK;
	struct nfqnl_msg_packet_hdr *ph = mnl_attr_get_payload(attr[NFQA_PACKET_HDR]);
	s->last_id = ntohl(ph->packet_id);
	s->count++;
	if (++s->pending >= BATCH)
		send_batch(s);
	return MNL_CB_OK;
}

static int config(struct mnl_socket *nl, int queue, void (*put)(struct nlmsghdr *, void *), void *arg)
{
	char buf[MNL_SOCKET_BUFFER_SIZE] __attribute__((aligned(8)));
	struct nlmsghdr *nlh = nfq_nlmsg_put(buf, NFQNL_MSG_CONFIG, queue);
	nlh->nlmsg_flags |= NLM_F_ACK;
	put(nlh, arg);
	if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0)
		return -1;
	ssize_t n = mnl_socket_recvfrom(nl, buf, sizeof buf);
	if (n < 0)
		return -1;
	return mnl_cb_run(buf, n, 0, mnl_socket_get_portid(nl), NULL, NULL) < 0 ? -1 : 0;
}

static void put_bind(struct nlmsghdr *nlh, void *arg) { (void)arg; nfq_nlmsg_cfg_put_cmd(nlh, AF_UNSPEC, NFQNL_CFG_CMD_BIND); }
static void put_params(struct nlmsghdr *nlh, void *arg) { (void)arg; nfq_nlmsg_cfg_put_params(nlh, NFQNL_COPY_PACKET, 0xffff); }
static void put_flags(struct nlmsghdr *nlh, void *arg)
{
	uint32_t flags = *(uint32_t *)arg;
	mnl_attr_put_u32(nlh, NFQA_CFG_FLAGS, htonl(flags));
	mnl_attr_put_u32(nlh, NFQA_CFG_MASK, htonl(NFQA_CFG_F_GSO));
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: nfq_batch [--gso] QUEUE_NUM\n");
		return 2;
	}
	uint32_t flags = (argc > 2 && strcmp(argv[1], "--gso") == 0) ? NFQA_CFG_F_GSO : 0;
	struct state s = {.queue = atoi(argv[argc - 1])};

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);

	s.nl = mnl_socket_open(NETLINK_NETFILTER);
	if (!s.nl || mnl_socket_bind(s.nl, 0, MNL_SOCKET_AUTOPID) < 0) {
		perror("netlink socket");
		return 1;
	}
	if (config(s.nl, s.queue, put_bind, NULL) < 0 || config(s.nl, s.queue, put_params, NULL) < 0 ||
	    config(s.nl, s.queue, put_flags, &flags) < 0) {
		perror("configuring the queue");
		return 1;
	}
	int fd = mnl_socket_get_fd(s.nl);
	int rcvbuf = RCVBUF;
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) < 0)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
	fprintf(stderr, "nfq_batch: bound queue %d\n", s.queue);

	static char buf[128 * 1024] __attribute__((aligned(8)));
	while (!stop) {
		ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
		if (n > 0) {
			mnl_cb_run(buf, n, 0, 0, packet_cb, &s);
			continue;
		}
		if (n < 0 && errno == ENOBUFS)
			continue;
		if (n < 0 && errno != EAGAIN && errno != EINTR) {
			perror("recv");
			break;
		}
		/* Nothing more to read: settle what was read, then wait. */
		if (s.pending)
			send_batch(&s);
		struct pollfd p = {.fd = fd, .events = POLLIN};
		poll(&p, 1, 100);
	}
	if (s.pending)
		send_batch(&s);
	printf("%llu\n", s.count);
	fflush(stdout);
	mnl_socket_close(s.nl);
	return 0;
}
