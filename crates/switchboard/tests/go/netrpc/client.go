package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand"
	"net"
	"net/http"
	"net/rpc"
	"net/rpc/jsonrpc"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"
)

// A case runs against a client dialled with -proto and prints its result.
// It returns an error when the server's answer is wrong.
type clientCase func(proto, addr string) error

var cases = map[string]clientCase{
	"multiply":       caseMultiply,
	"divide":         caseDivide,
	"apperror":       caseAppError,
	"unknown":        caseServerError("Arith.Nope"),
	"unknownservice": caseServerError("Nope.Nope"),
	"illformed":      caseServerError("NoDot"),
	"nested":         caseNested,
	"bytes":          caseBytes,
	"text":           caseText,
	"concurrent":     caseConcurrent,
	"garbage":        caseGarbage,
}

func caseNames() string {
	names := make([]string, 0, len(cases))
	for name := range cases {
		names = append(names, name)
	}
	sort.Strings(names)
	return strings.Join(names, " ")
}

func clientMain(argv []string) {
	flags := flag.NewFlagSet("client", flag.ExitOnError)
	proto := flags.String("proto", "gob", "gob (rpc.Dial), jsonrpc (jsonrpc.Dial) or http (rpc.DialHTTP)")
	addr := flags.String("addr", "", "server address HOST:PORT")
	name := flags.String("case", "", "what to run: "+caseNames())
	timeout := flags.Duration("timeout", 30*time.Second, "give up (exit 1) after this long")
	_ = flags.Parse(argv)

	run, ok := cases[*name]
	if !ok || *addr == "" {
		usage()
	}
	switch *proto {
	case "gob", "jsonrpc", "http":
	default:
		fmt.Fprintf(os.Stderr, "netrpcpeer client: unknown -proto %q (gob, jsonrpc or http)\n", *proto)
		os.Exit(2)
	}
	time.AfterFunc(*timeout, func() {
		fail("case %s over %s: no result after %v", *name, *proto, *timeout)
	})
	if err := run(*proto, *addr); err != nil {
		fail("case %s over %s: %v", *name, *proto, err)
	}
}

// dial connects as an unmodified Go program would.
func dial(proto, addr string) (*rpc.Client, error) {
	switch proto {
	case "jsonrpc":
		return jsonrpc.Dial("tcp", addr)
	case "http":
		return rpc.DialHTTP("tcp", addr)
	default:
		return rpc.Dial("tcp", addr)
	}
}

// dialRaw is dial keeping the TCP connection, so a case can write bytes the
// codec would never write. For http it does rpc.DialHTTP's handshake itself.
func dialRaw(proto, addr string) (*rpc.Client, net.Conn, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	switch proto {
	case "jsonrpc":
		return jsonrpc.NewClient(conn), conn, nil
	case "http":
		// As net/rpc's DialHTTPPath.
		if _, err := io.WriteString(conn, "CONNECT "+rpc.DefaultRPCPath+" HTTP/1.0\n\n"); err != nil {
			conn.Close()
			return nil, nil, err
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: "CONNECT"})
		if err != nil {
			conn.Close()
			return nil, nil, fmt.Errorf("CONNECT: %v", err)
		}
		if resp.Status != "200 Connected to Go RPC" {
			conn.Close()
			return nil, nil, fmt.Errorf("CONNECT: unexpected HTTP response %q", resp.Status)
		}
		return rpc.NewClient(conn), conn, nil
	default:
		return rpc.NewClient(conn), conn, nil
	}
}

// multiply calls Arith.Multiply and checks the product.
func multiply(client *rpc.Client, a, b int) error {
	var reply int
	if err := client.Call("Arith.Multiply", &Args{a, b}, &reply); err != nil {
		return fmt.Errorf("Arith.Multiply(%d, %d): %v", a, b, err)
	}
	if reply != a*b {
		return fmt.Errorf("Arith.Multiply(%d, %d) = %d, want %d", a, b, reply, a*b)
	}
	return nil
}

// Prints "56".
func caseMultiply(proto, addr string) error {
	client, err := dial(proto, addr)
	if err != nil {
		return err
	}
	defer client.Close()
	var reply int
	if err := client.Call("Arith.Multiply", &Args{7, 8}, &reply); err != nil {
		return err
	}
	fmt.Println(reply)
	return nil
}

// Prints "3 2".
func caseDivide(proto, addr string) error {
	client, err := dial(proto, addr)
	if err != nil {
		return err
	}
	defer client.Close()
	var quo Quotient
	if err := client.Call("Arith.Divide", &Args{17, 5}, &quo); err != nil {
		return err
	}
	fmt.Println(quo.Quo, quo.Rem)
	return nil
}

// Prints the error Arith.Divide returns for B == 0 ("divide by zero"): it must
// arrive as an rpc.ServerError, and the connection must keep working.
func caseAppError(proto, addr string) error {
	client, err := dial(proto, addr)
	if err != nil {
		return err
	}
	defer client.Close()
	var quo Quotient
	err = client.Call("Arith.Divide", &Args{17, 0}, &quo)
	if err == nil {
		return fmt.Errorf("Arith.Divide(17, 0) succeeded with %+v, want an error", quo)
	}
	if _, ok := err.(rpc.ServerError); !ok {
		return fmt.Errorf("Arith.Divide(17, 0) failed with %T %q, want an rpc.ServerError", err, err)
	}
	if err := multiply(client, 7, 8); err != nil {
		return fmt.Errorf("after the error reply: %v", err)
	}
	fmt.Println(err)
	return nil
}

// caseServerError calls method, which the server cannot route, and prints the
// rpc.ServerError it answers; the connection must keep working.
func caseServerError(method string) clientCase {
	return func(proto, addr string) error {
		client, err := dial(proto, addr)
		if err != nil {
			return err
		}
		defer client.Close()
		var reply int
		err = client.Call(method, &Args{7, 8}, &reply)
		if err == nil {
			return fmt.Errorf("%s succeeded with %d, want an error", method, reply)
		}
		if _, ok := err.(rpc.ServerError); !ok {
			return fmt.Errorf("%s failed with %T %q, want an rpc.ServerError", method, err, err)
		}
		if err := multiply(client, 7, 8); err != nil {
			return fmt.Errorf("after the error reply: %v", err)
		}
		fmt.Println(err)
		return nil
	}
}

// pseudoRandom returns n bytes, the same for the same seed.
func pseudoRandom(seed int64, n int) []byte {
	b := make([]byte, n)
	_, _ = rand.New(rand.NewSource(seed)).Read(b)
	return b
}

// nestedValue has every field set, non-ASCII text, edge-of-range numbers
// and no empty slice or map (gob would turn them into nil).
func nestedValue() Nested {
	return Nested{
		Title: "héllo wörld ✓ 日本 🚀",
		Count: -9007199254740993, // not representable as a float64
		Ratio: 0.1,
		Flag:  true,
		Data:  pseudoRandom(1, 1024),
		Items: []Inner{
			{Name: "ünïcode", Tags: []string{"a", "", "ß", "日本語"}, Score: -1.5e300},
			{Name: "", Tags: []string{"zero score"}, Score: 0},
			{Name: "third", Tags: []string{"x"}, Score: 2.25},
		},
		Labels: map[string]int{"one": 1, "minus": -42, "zero": 0, "ключ": 1 << 40},
		Ptr:    &Inner{Name: "pointed ✓", Tags: []string{"p", "q"}, Score: 3.5},
		Neg:    math.MinInt32,
		Big:    math.MaxUint64,
	}
}

// Prints "ok" when Echo.Nested answers exactly what was sent.
func caseNested(proto, addr string) error {
	client, err := dial(proto, addr)
	if err != nil {
		return err
	}
	defer client.Close()
	sent := nestedValue()
	var got Nested
	if err := client.Call("Echo.Nested", &sent, &got); err != nil {
		return err
	}
	if !reflect.DeepEqual(sent, got) {
		return fmt.Errorf("Echo.Nested answered a different value:\n%s", diff(sent, got))
	}
	fmt.Println("ok")
	return nil
}

// diff lists the fields of two structs that differ.
func diff(want, got interface{}) string {
	var out strings.Builder
	w, g := reflect.ValueOf(want), reflect.ValueOf(got)
	for i := 0; i < w.NumField(); i++ {
		wf, gf := w.Field(i).Interface(), g.Field(i).Interface()
		if reflect.DeepEqual(wf, gf) {
			continue
		}
		name := w.Type().Field(i).Name
		if wb, ok := wf.([]byte); ok {
			fmt.Fprintf(&out, "  %s: sent %d bytes, got %d, first difference at %d\n",
				name, len(wb), len(gf.([]byte)), firstDifference(wb, gf.([]byte)))
			continue
		}
		fmt.Fprintf(&out, "  %s: sent %#v\n  %s:  got %#v\n", name, wf, name, gf)
		if wp, ok := wf.(*Inner); ok && wp != nil {
			if gp := gf.(*Inner); gp != nil {
				fmt.Fprintf(&out, "  *%s: sent %#v\n  *%s:  got %#v\n", name, *wp, name, *gp)
			}
		}
	}
	return out.String()
}

func firstDifference(a, b []byte) int {
	for i := range a {
		if i >= len(b) || a[i] != b[i] {
			return i
		}
	}
	return len(a)
}

// Prints "ok 1048576" when 1 MiB of pseudo-random bytes comes back intact.
func caseBytes(proto, addr string) error {
	client, err := dial(proto, addr)
	if err != nil {
		return err
	}
	defer client.Close()
	sent := pseudoRandom(2, 1<<20)
	var got []byte
	if err := client.Call("Echo.Bytes", sent, &got); err != nil {
		return err
	}
	if !bytes.Equal(sent, got) {
		return fmt.Errorf("Echo.Bytes: sent %d bytes, got %d, first difference at %d",
			len(sent), len(got), firstDifference(sent, got))
	}
	fmt.Println("ok", len(got))
	return nil
}

// textValue is non-ASCII text (2-, 3- and 4-byte UTF-8) with the characters
// JSON escapes (Go's encoder also escapes <, > and &).
const textValue = "héllo wörld ✓ 日本 🚀 <tag> & \"quoted\" \\ tab\t newline\n nul\x00 end"

// Prints "ok " and the answer, Go-quoted (strconv.Quote).
func caseText(proto, addr string) error {
	client, err := dial(proto, addr)
	if err != nil {
		return err
	}
	defer client.Close()
	var got string
	if err := client.Call("Echo.Text", textValue, &got); err != nil {
		return err
	}
	if got != textValue {
		return fmt.Errorf("Echo.Text: sent %q, got %q", textValue, got)
	}
	fmt.Println("ok", strconv.Quote(got))
	return nil
}

// Prints "ok 1000" when 1,000 calls started together on one connection
// (client.Go, nothing awaited until all are sent) all answer correctly.
func caseConcurrent(proto, addr string) error {
	const n = 1000
	client, err := dial(proto, addr)
	if err != nil {
		return err
	}
	defer client.Close()
	done := make(chan *rpc.Call, n)
	for i := 0; i < n; i++ {
		client.Go("Arith.Multiply", &Args{i, i%13 - 6}, new(int), done)
	}
	outOfOrder, last := 0, -1
	for i := 0; i < n; i++ {
		call := <-done
		args := call.Args.(*Args)
		if call.Error != nil {
			return fmt.Errorf("call %d: %v", args.A, call.Error)
		}
		if got, want := *call.Reply.(*int), args.A*args.B; got != want {
			return fmt.Errorf("call %d: Arith.Multiply(%d, %d) = %d, want %d", args.A, args.A, args.B, got, want)
		}
		if args.A < last {
			outOfOrder++
		}
		last = args.A
	}
	fmt.Fprintf(os.Stderr, "netrpcpeer: %d of %d replies arrived after a later call's\n", outOfOrder, n)
	fmt.Println("ok", n)
	return nil
}

// garbageFor is what caseGarbage writes mid-stream: for gob, one complete
// message (length 63, then 63 bytes of 0xff) that no gob decoder can read,
// so the server fails at once instead of waiting for more bytes; for JSON,
// text that is not JSON.
func garbageFor(proto string) []byte {
	if proto == "jsonrpc" {
		return []byte(strings.Repeat("garbage!", 8))
	}
	return append([]byte{63}, bytes.Repeat([]byte{0xff}, 63)...)
}

// After one good call, writes 64 bytes of garbage on the connection and
// calls again: the server must close the connection (not answer), and still
// serve a new connection. Prints "closed: " and the error the second call
// got.
func caseGarbage(proto, addr string) error {
	client, conn, err := dialRaw(proto, addr)
	if err != nil {
		return err
	}
	defer client.Close()
	if err := multiply(client, 7, 8); err != nil {
		return fmt.Errorf("before the garbage: %v", err)
	}
	if _, err := conn.Write(garbageFor(proto)); err != nil {
		return fmt.Errorf("writing the garbage: %v", err)
	}
	var reply int
	call := client.Go("Arith.Multiply", &Args{6, 7}, &reply, make(chan *rpc.Call, 1))
	var closed error
	select {
	case <-call.Done:
		closed = call.Error
	case <-time.After(10 * time.Second):
		return errors.New("after the garbage the server neither answered nor closed the connection in 10s")
	}
	if closed == nil {
		return fmt.Errorf("the call after the garbage succeeded (%d): the server did not close the connection", reply)
	}
	if _, ok := closed.(rpc.ServerError); ok {
		return fmt.Errorf("the server answered the call after the garbage with an error (%q) instead of closing the connection", closed)
	}
	other, err := dial(proto, addr)
	if err != nil {
		return fmt.Errorf("a new connection after the garbage: %v", err)
	}
	defer other.Close()
	if err := multiply(other, 7, 8); err != nil {
		return fmt.Errorf("a new connection after the garbage: %v", err)
	}
	fmt.Println("closed:", closed)
	return nil
}
