//! Compiles the BPF C program with clang and generates its Rust skeleton.

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const SOURCE: &str = "src/bpf/connscope.bpf.c";

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    SkeletonBuilder::new()
        .source(SOURCE)
        .clang_args(["-Isrc/bpf", "-mcpu=v3", "-Wall"])
        .build_and_generate(out.join("connscope.skel.rs"))
        .expect("compiling the BPF program (needs clang)");
    println!("cargo:rerun-if-changed={SOURCE}");
    println!("cargo:rerun-if-changed=src/bpf/connscope.h");
    println!("cargo:rerun-if-changed=src/bpf/vmlinux.h");
}
