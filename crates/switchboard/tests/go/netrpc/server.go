package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/rpc"
	"net/rpc/jsonrpc"
	"os"
)

// serverMain serves Arith and Echo on one listener until standard input
// closes, so the server cannot outlive the test that started it.
func serverMain(argv []string) {
	flags := flag.NewFlagSet("server", flag.ExitOnError)
	proto := flags.String("proto", "gob", "gob (rpc.ServeConn), jsonrpc (jsonrpc codec) or http (CONNECT "+rpc.DefaultRPCPath+", as rpc.HandleHTTP)")
	listen := flags.String("listen", "127.0.0.1:0", "address to listen on (port 0 picks a free port)")
	_ = flags.Parse(argv)

	server := rpc.NewServer()
	if err := server.Register(new(Arith)); err != nil {
		log.Fatalf("register Arith: %v", err)
	}
	if err := server.Register(new(Echo)); err != nil {
		log.Fatalf("register Echo: %v", err)
	}

	var serve func(net.Listener)
	switch *proto {
	case "gob":
		serve = func(ln net.Listener) { accept(ln, func(conn net.Conn) { server.ServeConn(conn) }) }
	case "jsonrpc":
		serve = func(ln net.Listener) {
			accept(ln, func(conn net.Conn) { server.ServeCodec(jsonrpc.NewServerCodec(conn)) })
		}
	case "http":
		serve = func(ln net.Listener) {
			mux := http.NewServeMux()
			mux.Handle(rpc.DefaultRPCPath, server)
			log.Printf("http.Serve: %v", http.Serve(ln, mux))
		}
	default:
		fmt.Fprintf(os.Stderr, "netrpcpeer server: unknown -proto %q (gob, jsonrpc or http)\n", *proto)
		os.Exit(2)
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("listen on %s: %v", *listen, err)
	}
	// os.Stdout is unbuffered: the line is out when Printf returns.
	fmt.Printf("listening on %s\n", ln.Addr())
	go serve(ln)

	_, _ = io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}

// accept serves each connection of ln on its own goroutine.
func accept(ln net.Listener, serveConn func(net.Conn)) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			log.Printf("accept: %v", err)
			return
		}
		go serveConn(conn)
	}
}
