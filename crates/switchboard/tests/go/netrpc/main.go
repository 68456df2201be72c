// Command netrpcpeer is the Go side of Switchboard's net/rpc interop tests:
// an unmodified Go net/rpc server and client, standard library only.
//
//	netrpcpeer server -proto gob|jsonrpc|http [-listen 127.0.0.1:0]
//	netrpcpeer client -proto gob|jsonrpc|http -addr HOST:PORT -case NAME [-timeout 30s]
//
// The server registers Arith and Echo (services.go) with rpc.NewServer,
// prints "listening on HOST:PORT" once bound and serves until its standard
// input closes. The client dials with rpc.Dial, jsonrpc.Dial or
// rpc.DialHTTP, runs one case (client.go), prints its result and exits 0, or
// exits 1 with the reason on stderr. The Rust tests drive both through
// crates/switchboard/tests/support/go.rs.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	switch os.Args[1] {
	case "server":
		serverMain(os.Args[2:])
	case "client":
		clientMain(os.Args[2:])
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: netrpcpeer server -proto gob|jsonrpc|http [-listen ADDR]")
	fmt.Fprintln(os.Stderr, "       netrpcpeer client -proto gob|jsonrpc|http -addr ADDR -case NAME [-timeout DURATION]")
	fmt.Fprintln(os.Stderr, "cases: "+caseNames())
	os.Exit(2)
}

// fail reports why a run failed and exits 1.
func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "netrpcpeer: "+format+"\n", args...)
	os.Exit(1)
}
