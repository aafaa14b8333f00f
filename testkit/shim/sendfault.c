/*
 * Send failures and damaged packet messages on demand, for tests: an
 * LD_PRELOAD library that wraps sendmsg(2), sendto(2), recv(2) and
 * recvmmsg(2). Only verdict datagrams count: sends on an
 * AF_NETLINK / NETLINK_NETFILTER socket whose first message is an
 * NFQNL_MSG_VERDICT or NFQNL_MSG_VERDICT_BATCH. Every other call goes straight
 * to the C library.
 *
 * Configured by the environment, read once:
 *   NFQ_FAULT_ERRNO    errno to fail with (e.g. 105 ENOBUFS, 90 EMSGSIZE);
 *                      unset or 0: no failures
 *   NFQ_FAULT_MIN_LEN  only datagrams of at least this many bytes count
 *   NFQ_FAULT_FROM     the first counted call that fails (1-based, default 1)
 *   NFQ_FAULT_TO       the last one (default: no end)
 *   NFQ_FAULT_EVERY    with BURST: from FROM on, fail BURST calls of every EVERY
 *   NFQ_FAULT_BURST
 *   NFQ_FAULT_LOG      a file to which every verdict datagram that the kernel
 *                      took is appended, as a native u32 length and the bytes
 *   NFQ_FAULT_CORRUPT_EVERY  damage every Nth packet message received on a
 *                      NETLINK_NETFILTER socket (1-based count; unset or 0:
 *                      none): its second attribute gets a length too short
 *                      for an attribute, so the message cannot be parsed,
 *                      though its NFQA_PACKET_HDR (and the packet's id) can
 *   NFQ_FAULT_CORRUPT_ID     with 1, damage the NFQA_PACKET_HDR instead: the
 *                      packet's id cannot be read either
 *
 * nfq_fault_calls() and nfq_fault_injected() tell the test (through dlsym)
 * how many calls counted and how many were made to fail; nfq_fault_corrupted()
 * how many packet messages were damaged.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

/* (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET, | NFQNL_MSG_VERDICT, and
 * | NFQNL_MSG_VERDICT_BATCH */
#define MSG_PACKET ((3 << 8) | 0)
#define MSG_VERDICT ((3 << 8) | 1)
#define MSG_VERDICT_BATCH ((3 << 8) | 3)
/* nlmsghdr and nfgenmsg: the attributes of a packet message start here. */
#define ATTRS_AT (16 + 4)

typedef ssize_t (*sendmsg_fn)(int, const struct msghdr *, int);
typedef ssize_t (*sendto_fn)(int, const void *, size_t, int, const struct sockaddr *, socklen_t);
typedef ssize_t (*recv_fn)(int, void *, size_t, int);
typedef int (*recvmmsg_fn)(int, struct mmsghdr *, unsigned int, int, struct timespec *);

static sendmsg_fn real_sendmsg;
static sendto_fn real_sendto;
static recv_fn real_recv;
static recvmmsg_fn real_recvmmsg;
static unsigned long corrupt_every;
static int corrupt_id;
static atomic_ulong packets_seen;
static atomic_ulong corrupted;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static int fault_errno;
static size_t min_len;
static unsigned long from = 1, to = (unsigned long)-1, every, burst;
static int log_fd = -1;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_ulong calls;
static atomic_ulong injected;

static unsigned long env_num(const char *name, unsigned long fallback)
{
	const char *v = getenv(name);
	if (!v || !*v)
		return fallback;
	return strtoul(v, NULL, 0);
}

static void init(void)
{
	real_sendmsg = (sendmsg_fn)dlsym(RTLD_NEXT, "sendmsg");
	real_sendto = (sendto_fn)dlsym(RTLD_NEXT, "sendto");
	real_recv = (recv_fn)dlsym(RTLD_NEXT, "recv");
	real_recvmmsg = (recvmmsg_fn)dlsym(RTLD_NEXT, "recvmmsg");
	corrupt_every = env_num("NFQ_FAULT_CORRUPT_EVERY", 0);
	corrupt_id = (int)env_num("NFQ_FAULT_CORRUPT_ID", 0);
	fault_errno = (int)env_num("NFQ_FAULT_ERRNO", 0);
	min_len = env_num("NFQ_FAULT_MIN_LEN", 0);
	from = env_num("NFQ_FAULT_FROM", 1);
	to = env_num("NFQ_FAULT_TO", (unsigned long)-1);
	every = env_num("NFQ_FAULT_EVERY", 0);
	burst = env_num("NFQ_FAULT_BURST", 0);
	const char *log = getenv("NFQ_FAULT_LOG");
	if (log && *log)
		log_fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
}

unsigned long nfq_fault_calls(void)
{
	return atomic_load(&calls);
}

unsigned long nfq_fault_injected(void)
{
	return atomic_load(&injected);
}

unsigned long nfq_fault_corrupted(void)
{
	return atomic_load(&corrupted);
}

/* Whether fd is a NETLINK_NETFILTER socket and the datagram starts with a
 * verdict message. */
static int is_verdict(int fd, const void *first, size_t first_len)
{
	struct nlmsghdr h;
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	int proto = 0;
	socklen_t plen = sizeof(proto);

	if (first_len < sizeof(h))
		return 0;
	memcpy(&h, first, sizeof(h));
	if (h.nlmsg_type != MSG_VERDICT && h.nlmsg_type != MSG_VERDICT_BATCH)
		return 0;
	if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0 || ss.ss_family != AF_NETLINK)
		return 0;
	if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &plen) != 0)
		return 0;
	return proto == NETLINK_NETFILTER;
}

/* Counts a verdict send of `total` bytes; true when it is to fail. */
static int should_fail(size_t total)
{
	unsigned long n;

	if (total < min_len)
		return 0;
	n = atomic_fetch_add(&calls, 1) + 1;
	if (!fault_errno || n < from || n > to)
		return 0;
	if (every && (n - from) % every >= burst)
		return 0;
	atomic_fetch_add(&injected, 1);
	return 1;
}

static void log_datagram(const struct iovec *iov, size_t iovlen, size_t total)
{
	uint32_t len = (uint32_t)total;

	if (log_fd < 0)
		return;
	pthread_mutex_lock(&log_lock);
	if (write(log_fd, &len, sizeof(len)) == (ssize_t)sizeof(len))
		for (size_t i = 0; i < iovlen; i++)
			if (write(log_fd, iov[i].iov_base, iov[i].iov_len) != (ssize_t)iov[i].iov_len)
				break;
	pthread_mutex_unlock(&log_lock);
}

ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
	size_t total = 0;
	int verdict;
	ssize_t rc;

	pthread_once(&once, init);
	for (size_t i = 0; i < msg->msg_iovlen; i++)
		total += msg->msg_iov[i].iov_len;
	verdict = msg->msg_iovlen > 0 &&
		  is_verdict(fd, msg->msg_iov[0].iov_base, msg->msg_iov[0].iov_len);
	if (verdict && should_fail(total)) {
		errno = fault_errno;
		return -1;
	}
	rc = real_sendmsg(fd, msg, flags);
	if (verdict && rc >= 0)
		log_datagram(msg->msg_iov, msg->msg_iovlen, total);
	return rc;
}

ssize_t sendto(int fd, const void *buf, size_t len, int flags,
	       const struct sockaddr *addr, socklen_t addrlen)
{
	int verdict;
	ssize_t rc;

	pthread_once(&once, init);
	verdict = is_verdict(fd, buf, len);
	if (verdict && should_fail(len)) {
		errno = fault_errno;
		return -1;
	}
	rc = real_sendto(fd, buf, len, flags, addr, addrlen);
	if (verdict && rc >= 0) {
		struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
		log_datagram(&iov, 1, len);
	}
	return rc;
}

/* Whether fd is a NETLINK_NETFILTER socket. */
static int is_netfilter(int fd)
{
	int proto = 0;
	socklen_t plen = sizeof(proto);
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0 || ss.ss_family != AF_NETLINK)
		return 0;
	if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &plen) != 0)
		return 0;
	return proto == NETLINK_NETFILTER;
}

/* Damages the packet messages of a received datagram as the plan says. */
static void damage(void *buf, size_t len)
{
	unsigned char *at = buf;

	while (corrupt_every && len >= sizeof(struct nlmsghdr)) {
		struct nlmsghdr h;
		size_t msg_len, attr;
		uint16_t first_len, too_short = 2;

		memcpy(&h, at, sizeof(h));
		msg_len = h.nlmsg_len;
		if (msg_len < sizeof(h) || msg_len > len)
			return;
		if (h.nlmsg_type == MSG_PACKET && msg_len >= ATTRS_AT + 8 &&
		    (atomic_fetch_add(&packets_seen, 1) + 1) % corrupt_every == 0) {
			/* The first attribute is NFQA_PACKET_HDR; with the id
			 * kept, the one after it is damaged. */
			memcpy(&first_len, at + ATTRS_AT, sizeof(first_len));
			attr = ATTRS_AT + ((first_len + 3u) & ~3u);
			if (corrupt_id)
				attr = ATTRS_AT;
			if (attr + 4 <= msg_len) {
				memcpy(at + attr, &too_short, sizeof(too_short));
				atomic_fetch_add(&corrupted, 1);
			}
		}
		msg_len = NLMSG_ALIGN(msg_len);
		if (msg_len >= len)
			return;
		at += msg_len;
		len -= msg_len;
	}
}

ssize_t recv(int fd, void *buf, size_t len, int flags)
{
	ssize_t rc;

	pthread_once(&once, init);
	rc = real_recv(fd, buf, len, flags);
	if (rc > 0 && corrupt_every && is_netfilter(fd))
		damage(buf, (size_t)rc < len ? (size_t)rc : len);
	return rc;
}

int recvmmsg(int fd, struct mmsghdr *msgs, unsigned int vlen, int flags,
	     struct timespec *timeout)
{
	int rc;

	pthread_once(&once, init);
	rc = real_recvmmsg(fd, msgs, vlen, flags, timeout);
	if (rc > 0 && corrupt_every && is_netfilter(fd))
		for (int i = 0; i < rc; i++)
			if (msgs[i].msg_hdr.msg_iovlen > 0)
				damage(msgs[i].msg_hdr.msg_iov[0].iov_base,
				       msgs[i].msg_len < msgs[i].msg_hdr.msg_iov[0].iov_len
					       ? msgs[i].msg_len
					       : msgs[i].msg_hdr.msg_iov[0].iov_len);
	return rc;
}
