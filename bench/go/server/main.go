// Command server serves the net/rpc "Echo.Echo" method (gob codec) for the
// Switchboard benchmark harness.
//
// It prints "listening on ADDR" once bound, then serves until its standard
// input closes, so it cannot outlive the harness that started it.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/rpc"
	"os"

	"switchboard.invalid/bench/go/echo"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on (port 0 picks a free port)")
	flag.Parse()

	server := rpc.NewServer()
	if err := server.Register(echo.Echo{}); err != nil {
		log.Fatalf("register Echo: %v", err)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("cannot listen on %s: %v", *listen, err)
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	go server.Accept(ln)

	// Serve until the harness closes our standard input (or exits).
	_, _ = io.Copy(io.Discard, os.Stdin)
}
