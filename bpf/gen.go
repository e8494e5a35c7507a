// Package bpf holds bpfnet's TC programs (datapath.c), the headers they
// share with the Go control plane (include/), and the Go bindings bpf2go
// generates from them. The generated bpfnet_bpfel.go and bpfnet_bpfel.o are
// committed, so building needs no clang; `make generate` rebuilds them with
// clang-19 and CI fails when the result differs from what is committed.
package bpf

//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -type endpoint_info -type ip_endpoint -type network_info -type subnet_key -type traffic_counts -type drop_key -type drop_counts -type tuple -type ct_entry -type frag_key -type frag_entry -type nat_entry -type tuple6 -type nat_entry6 -type in6_key -type uplink_info Bpfnet datapath.c -- -O2 -g -Wall -Werror -I./include $BPF_INCLUDES
