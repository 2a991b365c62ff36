/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Records shared by the BPF program and userspace (the skeleton generates the
 * Rust side of these types, so the two cannot drift apart). */
#ifndef CONNSCOPE_H
#define CONNSCOPE_H

#define COMM_LEN 16
#define EXE_PATH_MAX 4096

enum event_kind {
	KIND_CONNECT = 1,
	KIND_DISCONNECT = 2,
	KIND_CONNECT_FAILED = 3,
};

enum event_direction {
	DIR_OUTGOING = 1,
	DIR_INCOMING = 2,
	DIR_UNKNOWN = 3,
};

/* Indexes of the per-CPU loss counters. */
enum loss_counter {
	LOST_RINGBUF = 0, /* ring buffer full: the event was dropped */
	LOST_CONN_TABLE = 1, /* TCP connection table full: its events are lost */
	LOST_UDP_TABLE = 2, /* UDP flow table full: the flow is not counted */
	LOST_HELLO = 3, /* hello ring full: a ClientHello was not copied (no event lost) */
	LOST_ANSWER = 4, /* answer ring full: a DNS answer was not copied (no event lost) */
	LOSS_COUNTERS = 5,
};

/* Who did it: the task in whose context a socket call ran. */
struct owner {
	__u64 start_ns; /* thread-group leader's start_boottime: pid + start = one process */
	__u32 pid; /* thread id */
	__u32 tgid; /* process id */
	char comm[COMM_LEN];
};

struct event {
	__u64 ts_ns; /* CLOCK_BOOTTIME */
	__u64 duration_ns;
	__u64 bytes_sent;
	__u64 bytes_received;
	__u64 packets_sent;
	__u64 packets_received;
	__u64 netns;
	__u64 sock_inode; /* preexisting connections: whose fd holds it */
	__u64 sock; /* TCP: the struct sock address, the connection's key while open */
	struct owner owner;
	__u32 uid;
	__s32 error; /* sk_err of a failed connect */
	__u16 lport;
	__u16 rport;
	__u8 laddr[16];
	__u8 raddr[16];
	__u8 kind;
	__u8 protocol; /* IPPROTO_TCP / IPPROTO_UDP */
	__u8 direction;
	__u8 family; /* AF_INET / AF_INET6 */
	__u8 has_owner;
	__u8 has_uid;
	__u8 preexisting;
	__u8 pad;
};

/* An executable path learned at exec, for processes gone before userspace
 * reads /proc. The path is written backwards: it is path[start..EXE_PATH_MAX). */
struct exe_path {
	__u64 start_ns;
	__u32 start;
	__u32 complete; /* 0: deeper than the walk goes, do not use */
	char path[EXE_PATH_MAX + 256];
};

struct udp_key {
	__u64 netns;
	__u8 laddr[16];
	__u8 raddr[16];
	__u16 lport;
	__u16 rport;
	__u8 family;
	__u8 pad[3];
};

struct udp_flow {
	__u64 first_ns;
	__u64 last_ns;
	__u64 packets_sent;
	__u64 packets_received;
	__u64 bytes_sent;
	__u64 bytes_received;
	struct owner owner;
	__u32 uid;
	__u8 direction;
	__u8 has_owner;
	__u8 has_uid;
	__u8 pad;
};

/* The first bytes of an outgoing TLS ClientHello: the TCP payload of a
 * connection's first data packet, from its record header on. Written to the
 * `hellos` ring buffer cut to its length: only `HELLO_HEADER + len` bytes. */
#define HELLO_MAX 4096

struct hello {
	__u64 netns;
	__u8 laddr[16];
	__u8 raddr[16];
	__u16 lport;
	__u16 rport;
	__u16 len; /* bytes of data that follow */
	__u8 family;
	__u8 pad;
	__u8 data[HELLO_MAX];
};

/* A received packet from port 53 (a DNS answer, or a piece of a TCP stream of
 * them), from its IP header on, cut at ANSWER_MAX: enough for the headers and
 * the largest UDP answer resolvers offer to take (an EDNS buffer of 4096).
 * Written to the `answers` ring buffer cut to its length. */
#define ANSWER_MAX (60 + 8 + 4096)

struct answer {
	__u64 netns;
	__u32 wire_len; /* the packet's length; more than len when it was cut */
	__u16 len; /* bytes of data that follow */
	__u16 pad;
	__u8 data[ANSWER_MAX];
};

#endif
