// SPDX-License-Identifier: GPL-2.0-or-later
/* connscope's kernel side: TCP connections from their state changes, their
 * owners from connect() and accept(), UDP flows from cgroup packet hooks.
 * Design notes are in the crate docs (src/lib.rs) and docs/CAPTURE.md. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "connscope.h"

#define AF_INET 2
#define AF_INET6 10
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD

/* Set by userspace before load. */
const volatile __u64 netns_filter = 0; /* 0: every namespace */
const volatile __u64 wakeup_bytes = 1; /* wake the reader past this much unread data */
const volatile bool capture_udp = false; /* UDP flows (--udp) */
/* ClientHellos and DNS answers, for naming (off with --no-names: the verifier
 * then drops the copying code) */
const volatile bool capture_names = false;
/* With --packet-cgroup: the cgroup (id, and depth in the hierarchy) whose
 * threads' ClientHellos are copied; 0: every thread's. */
const volatile __u64 hello_cgroup_id = 0;
const volatile __u32 hello_cgroup_level = 0;

struct conn {
	__u64 established_ns;
	struct owner owner;
	__u32 reported; /* connect event sent (cmpxchg'd: accept and close race) */
	__u8 direction;
	__u8 has_owner;
	__u8 preexisting;
	__u8 pad;
};

struct listen_key {
	__u64 netns;
	__u32 port;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
} events SEC(".maps");

/* ClientHellos, apart from the events: their records vary in length, and
 * they wake nobody (the reader takes them on its timer, with the events). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} hellos SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct hello);
} hello_scratch SEC(".maps");

/* Received packets from port 53, apart from the hellos for the same reason. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} answers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct answer);
} answer_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LOSS_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} losses SEC(".maps");

/* TCP sockets we follow, by struct sock address (valid until the socket
 * reaches CLOSE, where the entry is deleted). Preallocated, sized by
 * userspace: without preallocation every deleted entry is freed through RCU,
 * which cost a max-rate FIN burst about 5 points of its rate. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct conn);
} conns SEC(".maps");

/* Who called listen(), by namespace and port: the owner of connections that
 * are reset before anyone accepts them. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct listen_key);
	__type(value, struct owner);
} listeners SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct exe_path);
} exe_paths SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct exe_path);
} exe_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct udp_key);
	__type(value, struct udp_flow);
} udp_flows SEC(".maps");

/* Creator of each UDP socket, by socket cookie: the owner of flows whose
 * first datagram arrives (in softirq, where the current task is anybody). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct owner);
} udp_owners SEC(".maps");

extern void *bpf_cast_to_kern_ctx(void *obj) __ksym;

/* Never written: it puts struct event into the skeleton's generated types, so
 * userspace reads ring-buffer records with the compiler's own layout. */
struct event event_layout = {};
struct hello hello_layout = {};
struct answer answer_layout = {};
/* Never written either: they put the enums into the generated types, so
 * userspace decodes kinds, directions and loss counters by these names. */
enum event_kind event_kind_values;
enum event_direction event_direction_values;
enum loss_counter loss_counter_values;

static __always_inline void count_loss(__u32 counter)
{
	__u64 *n = bpf_map_lookup_elem(&losses, &counter);

	if (n)
		*n += 1;
}

/* Kernel memory is read two ways. The per-connection programs read through
 * BTF-typed pointers (tp_btf arguments, bpf_get_current_task_btf, or any
 * address given a type with bpf_core_cast): the verifier turns each load into
 * a fault-safe load, where BPF_CORE_READ costs a bpf_probe_read_kernel call
 * per field. The state-change program runs about ten times per connection
 * and the packet hooks for every packet (TCP's too, before they can tell),
 * so that was most of their cost. The programs that run once per exec or
 * once at start keep BPF_CORE_READ. */

static __always_inline void fill_owner(struct owner *o)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct task_struct *task = bpf_get_current_task_btf();

	o->pid = (__u32)id;
	o->tgid = id >> 32;
	o->start_ns = task->group_leader->start_boottime;
	bpf_get_current_comm(o->comm, sizeof(o->comm));
}

/* fill_owner for the cgroup programs. */
static __always_inline void fill_owner_read(struct owner *o)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct task_struct *task = (void *)bpf_get_current_task();

	o->pid = (__u32)id;
	o->tgid = id >> 32;
	o->start_ns = BPF_CORE_READ(task, group_leader, start_boottime);
	bpf_get_current_comm(o->comm, sizeof(o->comm));
}

static __always_inline bool netns_wanted(__u64 netns)
{
	return netns_filter == 0 || netns == netns_filter;
}

static __always_inline __u64 sock_netns(const struct sock *sk)
{
	return sk->__sk_common.skc_net.net->ns.inum;
}

static __always_inline struct event *reserve_event(void)
{
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

	if (!e) {
		count_loss(LOST_RINGBUF);
		return NULL;
	}
	__builtin_memset(e, 0, sizeof(*e));
	return e;
}

/* Batched wake-ups: waking the reader for every event costs a context switch
 * per event; instead the reader polls on a short timer and is woken early
 * only when a record takes the unread data past a multiple of wakeup_bytes.
 * Only then: a forced wake-up queues an irq_work (an interrupt to self, a VM
 * exit on a guest), and forcing one for every record above the threshold cost
 * a busy burst one interrupt per record until the reader caught up. The last
 * few records are looked at, not only this one, because records reserved
 * at the same moment on other CPUs are counted in `unread` too; the reader
 * drains everything once woken, so a second wake-up is harmless. */
#define RECORD_BYTES ((sizeof(struct event) + BPF_RINGBUF_HDR_SZ + 7) / 8 * 8)
#define CROSSING_WINDOW (4 * RECORD_BYTES)

static __always_inline void submit_event(struct event *e)
{
	__u64 unread = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	__u64 before = unread > CROSSING_WINDOW ? unread - CROSSING_WINDOW : 0;
	bool crossed = unread / wakeup_bytes != before / wakeup_bytes;

	bpf_ringbuf_submit(e, crossed ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
}

/* The local port. Not skc_num: a closing socket gives its port back
 * (inet_put_port zeroes it) before the CLOSE tracepoint runs. */
static __always_inline __u16 local_port(const struct sock *sk)
{
	return bpf_ntohs(bpf_core_cast(sk, struct inet_sock)->inet_sport);
}

static __always_inline void copy_in6(__u8 *to, const struct in6_addr *from)
{
	__u32 *words = (__u32 *)to;

	words[0] = from->in6_u.u6_addr32[0];
	words[1] = from->in6_u.u6_addr32[1];
	words[2] = from->in6_u.u6_addr32[2];
	words[3] = from->in6_u.u6_addr32[3];
}

static __always_inline void fill_tcp_addrs(struct event *e, const struct sock *sk, __u64 netns)
{
	const struct sock_common *skc = &sk->__sk_common;
	__u16 family = skc->skc_family;

	e->protocol = IPPROTO_TCP;
	e->sock = (__u64)sk;
	e->family = family;
	e->netns = netns;
	e->lport = local_port(sk);
	e->rport = bpf_ntohs(skc->skc_dport);
	if (family == AF_INET) {
		*(__u32 *)e->laddr = skc->skc_rcv_saddr;
		*(__u32 *)e->raddr = skc->skc_daddr;
	} else {
		copy_in6(e->laddr, &skc->skc_v6_rcv_saddr);
		copy_in6(e->raddr, &skc->skc_v6_daddr);
	}
	e->uid = sk->sk_uid.val;
	e->has_uid = 1;
}

static __always_inline void emit_connect(const struct sock *sk, __u64 netns, struct conn *c)
{
	struct event *e = reserve_event();

	if (!e)
		return;
	fill_tcp_addrs(e, sk, netns);
	e->kind = KIND_CONNECT;
	e->ts_ns = c->established_ns;
	e->direction = c->direction;
	e->owner = c->owner;
	e->has_owner = c->has_owner;
	e->preexisting = c->preexisting;
	submit_event(e);
}

static __always_inline void remember_owner_of_listener(const struct sock *sk, __u64 netns,
						       struct owner *o)
{
	struct listen_key key = { .netns = netns };
	struct owner *listener;

	key.port = local_port(sk);
	listener = bpf_map_lookup_elem(&listeners, &key);
	if (listener && listener->tgid)
		*o = *listener;
}

/* Payload bytes from the socket's sequence counters, which also count the
 * SYN and FIN flags: an active opener's SYN is in bytes_acked (a passive one
 * starts counting after it), our FIN once acknowledged, and the peer's FIN in
 * bytes_received once it arrived (SOCK_DONE). */
static __always_inline void close_counters(const struct sock *sk, int oldstate, __u8 direction,
					  struct event *e)
{
	const struct tcp_sock *tp = bpf_core_cast(sk, struct tcp_sock);
	__u64 acked = tp->bytes_acked;
	__u64 received = tp->bytes_received;
	bool fin_sent = oldstate == TCP_FIN_WAIT1 || oldstate == TCP_FIN_WAIT2 ||
			oldstate == TCP_CLOSING || oldstate == TCP_LAST_ACK;

	if (direction == DIR_OUTGOING && acked > 0)
		acked -= 1;
	if (fin_sent && acked > 0 && tp->snd_una == tp->write_seq)
		acked -= 1;
	if ((sk->__sk_common.skc_flags & (1UL << SOCK_DONE)) && received > 0)
		received -= 1;
	e->bytes_sent = acked;
	e->bytes_received = received;
}

static __always_inline void on_close(const struct sock *sk, __u64 netns, int oldstate)
{
	__u64 key = (__u64)sk;
	struct conn *c = bpf_map_lookup_elem(&conns, &key);
	struct event *e;

	if (!c)
		return;
	if (oldstate == TCP_SYN_SENT) {
		e = reserve_event();
		if (e) {
			fill_tcp_addrs(e, sk, netns);
			e->kind = KIND_CONNECT_FAILED;
			e->ts_ns = bpf_ktime_get_boot_ns();
			e->direction = DIR_OUTGOING;
			e->owner = c->owner;
			e->has_owner = c->has_owner;
			e->error = sk->sk_err;
			submit_event(e);
		}
		bpf_map_delete_elem(&conns, &key);
		return;
	}
	if (__sync_val_compare_and_swap(&c->reported, 0, 1) == 0) {
		/* Incoming: reset or closed in the accept queue; nobody accepted
		 * it, but the peer did connect. Report it, owned by whoever listens
		 * (noted when it was established). Outgoing: past SYN_SENT, so it
		 * was established, but that change was never seen (a run the
		 * kernel skipped): its connect, timed at connect(). */
		emit_connect(sk, netns, c);
	}
	e = reserve_event();
	if (e) {
		__u64 now = bpf_ktime_get_boot_ns();

		fill_tcp_addrs(e, sk, netns);
		e->kind = KIND_DISCONNECT;
		e->ts_ns = now;
		e->duration_ns = now - c->established_ns;
		close_counters(sk, oldstate, c->direction, e);
		e->direction = c->direction;
		e->owner = c->owner;
		e->has_owner = c->has_owner;
		e->preexisting = c->preexisting;
		submit_event(e);
	}
	bpf_map_delete_elem(&conns, &key);
}

static __always_inline int state_change(const struct sock *sk, int oldstate, int newstate)
{
	__u64 key = (__u64)sk;
	__u64 netns;

	/* Half the changes of a connection (FIN_WAIT1, CLOSE_WAIT, LAST_ACK...)
	 * tell us nothing: leave before reading anything. */
	if (newstate != TCP_SYN_SENT && newstate != TCP_ESTABLISHED && newstate != TCP_LISTEN &&
	    newstate != TCP_CLOSE)
		return 0;
	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	netns = sock_netns(sk);
	if (!netns_wanted(netns))
		return 0;

	if (newstate == TCP_SYN_SENT) {
		/* connect() runs in the caller's context: the owner is current. */
		/* Timed at connect() until established, should that change be missed. */
		struct conn c = { .direction = DIR_OUTGOING, .has_owner = 1 };

		c.established_ns = bpf_ktime_get_boot_ns();
		fill_owner(&c.owner);
		if (bpf_map_update_elem(&conns, &key, &c, BPF_ANY))
			count_loss(LOST_CONN_TABLE);
	} else if (newstate == TCP_ESTABLISHED && oldstate == TCP_SYN_SENT) {
		struct conn *c = bpf_map_lookup_elem(&conns, &key);

		if (!c)
			return 0; /* connecting since before we started */
		c->established_ns = bpf_ktime_get_boot_ns();
		c->reported = 1;
		emit_connect(sk, netns, c);
	} else if (newstate == TCP_ESTABLISHED && oldstate == TCP_SYN_RECV) {
		/* Softirq: the current task is whoever ran. The owner is learned
		 * when accept() returns this socket. */
		struct conn c = { .direction = DIR_INCOMING };

		c.established_ns = bpf_ktime_get_boot_ns();
		/* Until accept() says otherwise, it is the listener's. Looked up
		 * now: closing a listener drops its entry before it resets the
		 * connections still queued on it. */
		remember_owner_of_listener(sk, netns, &c.owner);
		c.has_owner = c.owner.tgid != 0;
		if (bpf_map_update_elem(&conns, &key, &c, BPF_ANY))
			count_loss(LOST_CONN_TABLE);
	} else if (newstate == TCP_LISTEN) {
		struct listen_key lk = { .netns = netns };
		struct owner o = {};

		lk.port = local_port(sk);
		fill_owner(&o);
		bpf_map_update_elem(&listeners, &lk, &o, BPF_ANY);
	} else if (newstate == TCP_CLOSE && oldstate == TCP_LISTEN) {
		struct listen_key lk = { .netns = netns };

		lk.port = local_port(sk);
		bpf_map_delete_elem(&listeners, &lk);
	} else if (newstate == TCP_CLOSE) {
		on_close(sk, netns, oldstate);
	}
	return 0;
}

/* A tracing program does not run while it is already running on the same
 * CPU: the kernel skips the nested run and only counts it. A state change in
 * process context (connect(), close(), a socket's backlog at release_sock)
 * can be interrupted by a softirq that changes another socket's state, and
 * that change was lost under load. So a second program takes the nested
 * runs: the first marks its CPU busy while it works; the second, called for
 * every change too, works only while the first is busy on its CPU, which is
 * exactly when the first's run was skipped. It cannot be interrupted in turn:
 * no TCP state changes in a hardware interrupt. Its runs are counted, so the
 * first program's skips that nobody took (the few instructions before and
 * after the mark) are still counted as lost. */
struct state_runs {
	__u64 busy;
	/* Runs the second program took for the first. */
	__u64 taken;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct state_runs);
} state_runs SEC(".maps");

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tcp_state_change, const struct sock *sk, int oldstate, int newstate)
{
	__u32 zero = 0;
	struct state_runs *runs = bpf_map_lookup_elem(&state_runs, &zero);

	if (!runs)
		return 0;
	runs->busy = 1;
	state_change(sk, oldstate, newstate);
	runs->busy = 0;
	return 0;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tcp_state_change_nested, const struct sock *sk, int oldstate, int newstate)
{
	__u32 zero = 0;
	struct state_runs *runs = bpf_map_lookup_elem(&state_runs, &zero);

	if (!runs || !runs->busy)
		return 0;
	runs->taken += 1;
	return state_change(sk, oldstate, newstate);
}

/* accept() returned fd: its socket is task->files->fdt->fd[fd]->private_data. */
static __always_inline int on_accepted(long fd)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct fdtable *fdt;
	struct file *file = NULL;
	struct socket *sock;
	struct sock *sk;
	struct conn *c;
	__u64 key;

	if (fd < 0)
		return 0;
	fdt = task->files->fdt;
	if (fd >= fdt->max_fds)
		return 0;
	/* An array indexed by a variable: the one read that needs the helper. */
	bpf_probe_read_kernel(&file, sizeof(file), &fdt->fd[fd]);
	if (!file)
		return 0;
	sock = bpf_core_cast(file, struct file)->private_data;
	if (!sock)
		return 0;
	sk = bpf_core_cast(sock, struct socket)->sk;
	key = (__u64)sk;
	c = bpf_map_lookup_elem(&conns, &key);
	if (!c || c->direction != DIR_INCOMING)
		return 0;
	fill_owner(&c->owner);
	c->has_owner = 1;
	if (__sync_val_compare_and_swap(&c->reported, 0, 1) == 0)
		emit_connect(sk, sock_netns(sk), c);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int accept4_exit(struct syscall_trace_exit *ctx)
{
	return on_accepted(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_accept")
int accept_exit(struct syscall_trace_exit *ctx)
{
	return on_accepted(ctx->ret);
}

/* The executable's full path, walked up the dentry tree at exec, so a process
 * that connects and exits before userspace reads /proc still has its name.
 * The walk runs in bpf_loop so the verifier checks one step, not every path. */
#define PATH_DEPTH 64

struct path_walk {
	struct dentry *dentry;
	struct mount *mnt;
	__u32 pos;
	__u32 complete;
};

static long path_step(__u64 index, struct path_walk *w)
{
	__u32 zero = 0;
	struct exe_path *buf = bpf_map_lookup_elem(&exe_scratch, &zero);
	struct dentry *dentry = w->dentry;
	struct mount *mnt = w->mnt;
	struct dentry *parent = BPF_CORE_READ(dentry, d_parent);
	struct dentry *mnt_root = BPF_CORE_READ(mnt, mnt.mnt_root);
	struct qstr name;
	__u32 len, pos = w->pos;

	if (!buf)
		return 1;
	if (dentry == mnt_root || dentry == parent) {
		struct mount *up = BPF_CORE_READ(mnt, mnt_parent);

		if (dentry != mnt_root || up == mnt) {
			w->complete = 1;
			return 1;
		}
		/* Cross to the mount point in the parent mount. */
		w->dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
		w->mnt = up;
		return 0;
	}
	name = BPF_CORE_READ(dentry, d_name);
	len = name.len;
	if (len > 255 || len + 1 > pos)
		return 1;
	pos -= len;
	bpf_probe_read_kernel(buf->path + (pos & (EXE_PATH_MAX - 1)), len & 255, name.name);
	pos -= 1;
	buf->path[pos & (EXE_PATH_MAX - 1)] = '/';
	w->pos = pos;
	w->dentry = parent;
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(process_exec, struct task_struct *task, pid_t old_pid, struct linux_binprm *bprm)
{
	__u32 zero = 0, tgid = BPF_CORE_READ(task, tgid);
	struct exe_path *buf;
	struct vfsmount *vfs = BPF_CORE_READ(bprm, file, f_path.mnt);
	struct path_walk w = {
		.dentry = BPF_CORE_READ(bprm, file, f_path.dentry),
		.mnt = container_of(vfs, struct mount, mnt),
		.pos = EXE_PATH_MAX,
	};

	bpf_loop(PATH_DEPTH, path_step, &w, 0);
	buf = bpf_map_lookup_elem(&exe_scratch, &zero);
	if (!buf)
		return 0;
	buf->start_ns = BPF_CORE_READ(task, group_leader, start_boottime);
	buf->start = w.pos;
	buf->complete = w.complete;
	bpf_map_update_elem(&exe_paths, &tgid, buf, BPF_ANY);
	return 0;
}

/* Connections open before we started: reported once, and followed from then
 * on. The iterator walks listeners before established sockets, so a socket
 * on a listening port is known to be an incoming one.
 *
 * The agent walks again every few seconds (the sweep): each open connection
 * it follows is written to the walk's output, so userspace learns which
 * sockets are still there and can tell a close the kernel never reported
 * (a state change whose program did not run) from an open connection; and a
 * connection whose establishment was not seen is reported as found open. */
SEC("iter/tcp")
int preexisting_tcp(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct listen_key lk = {};
	struct conn c = { .reported = 1, .preexisting = 1 };
	struct tcp_sock *tp;
	struct sock *sk;
	struct event *e;
	__u64 netns, key;
	int state;

	if (!skc)
		return 0;
	netns = BPF_CORE_READ(skc, skc_net.net, ns.inum);
	if (!netns_wanted(netns))
		return 0;
	state = BPF_CORE_READ(skc, skc_state);
	lk.netns = netns;
	lk.port = BPF_CORE_READ(skc, skc_num);
	if (state == TCP_LISTEN) {
		struct owner unknown = {};

		bpf_map_update_elem(&listeners, &lk, &unknown, BPF_NOEXIST);
		return 0;
	}
	tp = bpf_skc_to_tcp_sock(skc);
	if (!tp || state == TCP_SYN_SENT || state == TCP_SYN_RECV || state == TCP_CLOSE)
		return 0;
	sk = (struct sock *)tp;
	key = (__u64)sk;
	c.established_ns = bpf_ktime_get_boot_ns();
	c.direction = bpf_map_lookup_elem(&listeners, &lk) ? DIR_INCOMING : DIR_OUTGOING;
	if (bpf_map_update_elem(&conns, &key, &c, BPF_NOEXIST)) {
		/* Already followed since its state changed, or the table is full:
		 * only the second is a loss. */
		if (bpf_map_lookup_elem(&conns, &key))
			bpf_seq_write(ctx->meta->seq, &key, sizeof(key));
		else
			count_loss(LOST_CONN_TABLE);
		return 0;
	}
	bpf_seq_write(ctx->meta->seq, &key, sizeof(key));
	e = reserve_event();
	if (!e)
		return 0;
	fill_tcp_addrs(e, sk, netns);
	e->kind = KIND_CONNECT;
	e->ts_ns = c.established_ns;
	e->direction = c.direction;
	e->preexisting = 1;
	e->sock_inode = BPF_CORE_READ(sk, sk_socket, file, f_inode, i_ino);
	submit_event(e);
	return 0;
}

/* ---- UDP ---- */

SEC("cgroup/sock_create")
int udp_socket_created(struct bpf_sock *ctx)
{
	__u64 cookie;
	struct owner o = {};

	if (ctx->protocol != IPPROTO_UDP)
		return 1;
	cookie = bpf_get_socket_cookie(ctx);
	fill_owner_read(&o);
	bpf_map_update_elem(&udp_owners, &cookie, &o, BPF_ANY);
	return 1;
}

/* Fills the flow key from the packet headers; returns the payload length, or
 * -1 when the packet is not UDP. */
static __always_inline long udp_parse(struct __sk_buff *skb, bool egress, struct udp_key *k)
{
	struct udphdr uh;
	__u32 off;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)) || ip.protocol != IPPROTO_UDP)
			return -1;
		k->family = AF_INET;
		__builtin_memcpy(k->laddr, egress ? &ip.saddr : &ip.daddr, 4);
		__builtin_memcpy(k->raddr, egress ? &ip.daddr : &ip.saddr, 4);
		off = ip.ihl * 4;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)) || ip6.nexthdr != IPPROTO_UDP)
			return -1;
		k->family = AF_INET6;
		__builtin_memcpy(k->laddr, egress ? &ip6.saddr : &ip6.daddr, 16);
		__builtin_memcpy(k->raddr, egress ? &ip6.daddr : &ip6.saddr, 16);
		off = sizeof(ip6);
	} else {
		return -1;
	}
	if (bpf_skb_load_bytes(skb, off & 0xff, &uh, sizeof(uh)))
		return -1;
	k->lport = bpf_ntohs(egress ? uh.source : uh.dest);
	k->rport = bpf_ntohs(egress ? uh.dest : uh.source);
	return (long)bpf_ntohs(uh.len) - (long)sizeof(uh);
}

static __always_inline int udp_packet(struct __sk_buff *skb, bool egress)
{
	struct sk_buff *kskb = bpf_cast_to_kern_ctx(skb);
	struct sock *sk = kskb->sk;
	struct udp_key key = {};
	struct udp_flow *flow;
	struct event *e;
	__u64 now;
	long len;

	/* Every packet of every socket passes here, TCP's too: typed loads, no
	 * helper calls, until it is known to be UDP. */
	if (!sk || sk->sk_protocol != IPPROTO_UDP)
		return 1;
	key.netns = sock_netns(sk);
	if (!netns_wanted(key.netns))
		return 1;
	len = udp_parse(skb, egress, &key);
	if (len < 0)
		return 1;
	now = bpf_ktime_get_boot_ns();
	flow = bpf_map_lookup_elem(&udp_flows, &key);
	if (flow) {
		flow->last_ns = now;
		if (egress) {
			__sync_fetch_and_add(&flow->packets_sent, 1);
			__sync_fetch_and_add(&flow->bytes_sent, len);
		} else {
			__sync_fetch_and_add(&flow->packets_received, 1);
			__sync_fetch_and_add(&flow->bytes_received, len);
		}
		return 1;
	}

	struct udp_flow f = {
		.first_ns = now,
		.last_ns = now,
		.direction = egress ? DIR_OUTGOING : DIR_INCOMING,
		.has_uid = 1,
	};
	f.uid = sk->sk_uid.val;
	if (egress) {
		/* Sending runs in the sender's context. */
		fill_owner_read(&f.owner);
		f.has_owner = 1;
		f.packets_sent = 1;
		f.bytes_sent = len;
	} else {
		__u64 cookie = bpf_get_socket_cookie(skb);
		struct owner *creator = bpf_map_lookup_elem(&udp_owners, &cookie);

		if (creator) {
			f.owner = *creator;
			f.has_owner = 1;
		}
		f.packets_received = 1;
		f.bytes_received = len;
	}
	if (bpf_map_update_elem(&udp_flows, &key, &f, BPF_NOEXIST)) {
		/* Lost a race with another CPU (count it there), or the table is full. */
		flow = bpf_map_lookup_elem(&udp_flows, &key);
		if (!flow) {
			count_loss(LOST_UDP_TABLE);
			return 1;
		}
		__sync_fetch_and_add(egress ? &flow->packets_sent : &flow->packets_received, 1);
		__sync_fetch_and_add(egress ? &flow->bytes_sent : &flow->bytes_received, len);
		return 1;
	}
	e = reserve_event();
	if (!e)
		return 1;
	e->kind = KIND_CONNECT;
	e->ts_ns = now;
	e->protocol = IPPROTO_UDP;
	e->family = key.family;
	e->netns = key.netns;
	e->lport = key.lport;
	e->rport = key.rport;
	__builtin_memcpy(e->laddr, key.laddr, 16);
	__builtin_memcpy(e->raddr, key.raddr, 16);
	e->direction = f.direction;
	e->owner = f.owner;
	e->has_owner = f.has_owner;
	e->uid = f.uid;
	e->has_uid = 1;
	submit_event(e);
	return 1;
}

/* ---- TLS ClientHellos, for naming ---- */

/* The transport header of a packet at a cgroup hook (where data starts at
 * the network header), `ip_len` bytes in, when the linear data holds `need`
 * bytes of it; NULL otherwise (headers are pulled into the linear data by
 * then on every path we know, so that is for the helper, rarely). Read in
 * place, this costs a bounds check where bpf_skb_load_bytes costs a call:
 * the packet hooks run for every packet, so that is most of what they do. */
static __always_inline const __u8 *transport(struct __sk_buff *skb, __u32 ip_len, __u32 need)
{
	const __u8 *data = (const __u8 *)(long)skb->data;
	const __u8 *end = (const __u8 *)(long)skb->data_end;

	if (ip_len > 255 || data + ip_len + need > end)
		return NULL;
	return data + ip_len;
}

/* Where the first `len` bytes of a send are in the caller's memory (the
 * iterator where the send starts), or NULL; `len` is cut to that segment.
 * Only a plain user buffer (write, send, io_uring's) and an iovec's first
 * segment (writev, sendmsg) are followed: sendfile and splice (page
 * vectors) are not. */
static __always_inline const void *send_buffer(const struct iov_iter *it, __u64 *len)
{
	__u8 type = it->iter_type;

	if (type == ITER_UBUF) {
		if (*len > it->count)
			*len = it->count;
		return it->ubuf + it->iov_offset;
	}
	if (type == ITER_IOVEC) {
		const struct iovec *iov = it->__iov;
		__u64 in_segment = iov->iov_len - it->iov_offset;

		if (*len > in_segment)
			*len = in_segment;
		return iov->iov_base + it->iov_offset;
	}
	return NULL;
}

/* A ClientHello is the first data a TLS client sends: it is copied from the
 * first send of an outgoing connection, once per send call rather than on
 * every packet (a per-packet hook ran for every packet of every socket, to
 * leave; this runs per send and leaves after a few loads). The tracepoint
 * fires in tcp_sendmsg_locked's loop, before each piece of the message is
 * queued: the first of a connection's first send is where nothing was ever
 * written to the socket. bytes_sent alone counts only what went out, not
 * what waits in the write queue (corked, or behind Nagle), which write_seq
 * != snd_nxt tells. fentry on tcp_sendmsg would do as well, but this kernel
 * refuses trampolines (EPERM) and has no kprobes. */
SEC("tp_btf/tcp_sendmsg_locked")
int BPF_PROG(hello_send, const struct sock *sk, const struct msghdr *msg,
	     const struct sk_buff *tail, int size_goal)
{
	const struct tcp_sock *tp = bpf_core_cast(sk, struct tcp_sock);
	const void *from;
	__u32 zero = 0;
	struct hello *h;
	__u8 head[6];
	__u64 len;

	if (tp->bytes_sent != 0 || tp->write_seq != tp->snd_nxt ||
	    sk->__sk_common.skc_state != TCP_ESTABLISHED)
		return 0;
	/* Only the client sends a ClientHello: an accepted connection's first
	 * write (a server's) is left unread. bytes_acked counts an active
	 * opener's SYN; a passive one's count starts after it. */
	if (tp->bytes_acked == 0)
		return 0;
	len = msg->msg_iter.count;
	if (len < sizeof(head) || !netns_wanted(sock_netns(sk)))
		return 0;
	if (hello_cgroup_id &&
	    bpf_get_current_ancestor_cgroup_id(hello_cgroup_level) != hello_cgroup_id)
		return 0;
	from = send_buffer(&msg->msg_iter, &len);
	if (!from || len < sizeof(head) || bpf_probe_read_user(head, sizeof(head), from) ||
	    head[0] != 0x16 || head[1] != 0x03 || head[5] != 0x01)
		return 0;
	h = bpf_map_lookup_elem(&hello_scratch, &zero);
	if (!h)
		return 0;
	if (len > HELLO_MAX)
		len = HELLO_MAX;
	/* Bounds the verifier can follow (the compiler may drop the ones above). */
	asm volatile("%[len] &= 0x1fff" : [len] "+r"(len));
	if (len < sizeof(head) || len > HELLO_MAX)
		return 0;
	if (bpf_probe_read_user(h->data, len, from))
		return 0;
	h->len = len;
	h->netns = sock_netns(sk);
	h->family = sk->__sk_common.skc_family;
	h->lport = local_port(sk);
	h->rport = bpf_ntohs(sk->__sk_common.skc_dport);
	if (h->family == AF_INET) {
		__builtin_memset(h->laddr, 0, sizeof(h->laddr));
		__builtin_memset(h->raddr, 0, sizeof(h->raddr));
		*(__u32 *)h->laddr = sk->__sk_common.skc_rcv_saddr;
		*(__u32 *)h->raddr = sk->__sk_common.skc_daddr;
	} else {
		copy_in6(h->laddr, &sk->__sk_common.skc_v6_rcv_saddr);
		copy_in6(h->raddr, &sk->__sk_common.skc_v6_daddr);
	}
	if (bpf_ringbuf_output(&hellos, h, offsetof(struct hello, data) + len, BPF_RB_NO_WAKEUP))
		count_loss(LOST_HELLO);
	return 0;
}

SEC("cgroup_skb/egress")
int packet_egress(struct __sk_buff *skb)
{
	return udp_packet(skb, true);
}

/* ---- DNS answers, for naming ---- */

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04

/* Copies a packet a socket receives from port 53: a UDP answer, or a TCP
 * segment of a stream of them. Every packet every socket receives passes
 * here, so the others leave after a typed load of the socket's protocol and
 * the source port read in place. Hooked where the socket takes the packet,
 * it sees answers relayed over loopback by a local stub (127.0.0.53) like
 * any other, once, in the receiving socket's namespace. */
static __always_inline void dns_answer(struct __sk_buff *skb, struct sk_buff *kskb,
				       const struct sock *sk)
{
	__u8 protocol = sk->sk_protocol;
	__u32 zero = 0, ip_len, len;
	const __u8 *ports;
	struct answer *a;
	__u16 sport;
	__u8 th[2];

	if (protocol != IPPROTO_UDP && protocol != IPPROTO_TCP)
		return;
	ip_len = kskb->transport_header - kskb->network_header;
	ports = transport(skb, ip_len, sizeof(sport));
	if (ports)
		sport = *(const __u16 *)ports;
	else if (ip_len > 255 || bpf_skb_load_bytes(skb, ip_len, &sport, sizeof(sport)))
		return;
	if (sport != bpf_htons(53))
		return;
	if (!netns_wanted(sock_netns(sk)))
		return;
	/* TCP: bare ACKs carry nothing; SYN (where the stream starts), FIN and
	 * RST (where it ends) matter to the reassembly even without payload. */
	if (protocol == IPPROTO_TCP &&
	    (bpf_skb_load_bytes(skb, ip_len + 12, th, sizeof(th)) ||
	     (skb->len <= ip_len + (th[0] >> 4) * 4 && !(th[1] & (TCP_FIN | TCP_SYN | TCP_RST)))))
		return;
	a = bpf_map_lookup_elem(&answer_scratch, &zero);
	if (!a)
		return;
	len = skb->len < ANSWER_MAX ? skb->len : ANSWER_MAX;
	/* Bounds the verifier can follow (the compiler may drop the ones above). */
	asm volatile("%[len] &= 0x1fff" : [len] "+r"(len));
	if (len == 0 || len > ANSWER_MAX)
		return;
	if (bpf_skb_load_bytes(skb, 0, a->data, len))
		return;
	a->netns = sock_netns(sk);
	a->wire_len = skb->len;
	a->len = len;
	if (bpf_ringbuf_output(&answers, a, offsetof(struct answer, data) + len, BPF_RB_NO_WAKEUP))
		count_loss(LOST_ANSWER);
}

SEC("cgroup_skb/ingress")
int packet_ingress(struct __sk_buff *skb)
{
	struct sk_buff *kskb = bpf_cast_to_kern_ctx(skb);
	struct sock *sk = kskb->sk;

	if (capture_names && sk)
		dns_answer(skb, kskb, sk);
	if (!capture_udp)
		return 1;
	return udp_packet(skb, false);
}

char LICENSE[] SEC("license") = "GPL";
