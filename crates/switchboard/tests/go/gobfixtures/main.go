// Command gobfixtures produces and checks the gob fixtures of Switchboard's
// Go gob codec (crates/switchboard/src/go/gob). Standard library only.
//
//	gobfixtures gen DIR      write DIR/NAME.hex for every fixture, each made
//	                         by a fresh process (gob type ids are per process)
//	gobfixtures encode NAME  print the gob stream of fixture NAME as hex,
//	                         one message per line
//	gobfixtures single NAME I  the same for value I (from 0) of fixture NAME
//	                         alone, as this fresh process's first value: its
//	                         standalone payload
//	gobfixtures decode KINDS read a hex gob stream from stdin, decode every
//	                         value in it into the Go types KINDS (a comma-
//	                         separated cycle, e.g. request,args) and print
//	                         each as one line of JSON ("skip" discards a value
//	                         as net/rpc does, printing null)
//
// The Rust tests (crates/switchboard/tests/go_gob.rs) decode the committed
// fixtures, compare their own encodings with them byte for byte, and pipe
// their encodings through `decode` to prove Go accepts them.
package main

import (
	"bytes"
	"encoding/gob"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/rpc"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Args is the argument of the classic net/rpc example, Arith.Multiply.
type Args struct{ A, B int }

// Inner is nested in Nested, by value and in a slice.
type Inner struct {
	Label string
	Score float64
}

// Nested exercises every kind of value the codec supports.
type Nested struct {
	Name   string
	Count  int64
	Ratio  float64
	Flag   bool
	Data   []byte
	Tags   []string
	Scores map[string]int64
	Child  Inner
	Kids   []Inner
	Ptr    *int64
	Big    uint64
	Grid   [3]int32
	Zero   int64
	Empty  string
}

// Node contains itself (through a slice): gob sends recursive types.
type Node struct {
	Name string
	Kids []Node
}

// Mixed has what Nested lacks: a recursive type, a type that encodes
// itself (time.Time, a GobEncoder), an interface, sized and unsigned
// numbers, a map with integer keys, a pointer to a struct, a complex number.
type Mixed struct {
	Tree  Node
	When  time.Time
	Any   interface{}
	Small int8
	Byte  uint8
	Ratio float32
	Ids   map[int32]string
	Ptr   *Inner
	Pair  [2]bool
	Us    []uint16
	C     complex128 `json:"-"` // JSON has no complex numbers
}

func mixed() Mixed {
	return Mixed{
		Tree:  Node{Name: "root", Kids: []Node{{Name: "a"}, {Name: "b", Kids: []Node{{Name: "c"}}}}},
		When:  time.Date(2024, 1, 2, 3, 4, 5, 6, time.UTC),
		Small: -8,
		Byte:  200,
		Ratio: 0.5,
		Ids:   map[int32]string{-1: "minus one"},
		Ptr:   &Inner{Label: "p", Score: -1},
		Pair:  [2]bool{false, true},
		Us:    []uint16{1, 65535},
		C:     complex(1.5, -2),
	}
}

// fixtures are the values behind testdata/NAME.hex. Each is a list of values
// encoded one after the other on one gob stream.
func fixtures() map[string][]any {
	ptr := int64(-7)
	return map[string][]any{
		"args": {Args{A: 7, B: 8}},
		// The same type three times: one type definition, then values;
		// zero fields are left out (Args{} is just the struct terminator).
		"args_stream": {Args{A: 7, B: 8}, Args{A: 0, B: 9}, Args{}},
		"nested": {Nested{
			Name:   "Grüße, 世界 ✓",
			Count:  -129,
			Ratio:  -2.5,
			Flag:   true,
			Data:   []byte{0, 1, 2, 0xfe, 0xff},
			Tags:   []string{"a", "", "ζ"},
			Scores: map[string]int64{"x": -1},
			Child:  Inner{Label: "in", Score: 17},
			Kids:   []Inner{{Label: "k1", Score: 0.5}, {}},
			Ptr:    &ptr,
			Big:    1<<64 - 1,
			Grid:   [3]int32{1, 0, -1},
		}},
		// Mostly zero: zero fields are omitted, the nested struct is not.
		"zeros":  {Nested{Count: -1}},
		"int":    {56},
		"string": {"héllo, 世界 ✓"},
		"float":  {17.0},
		"slice":  {[]int64{1, -2, 300}},
		"map":    {map[string]int{"seven": 7}},
		// net/rpc with its default gob codec: every message is a header
		// then a body, both encoded on the connection's one gob stream.
		"call": {
			rpc.Request{ServiceMethod: "Arith.Multiply", Seq: 0}, Args{A: 7, B: 8},
			rpc.Request{ServiceMethod: "Arith.Multiply", Seq: 1}, Args{A: 0, B: 9},
		},
		// A reply, then an error reply: its body is net/rpc's struct{}{}.
		"reply": {
			rpc.Response{ServiceMethod: "Arith.Multiply", Seq: 0}, 56,
			rpc.Response{ServiceMethod: "Arith.Divide", Seq: 1, Error: "divide by zero"}, struct{}{},
		},
		// Values whose types were partly defined by earlier ones.
		"mixed": {
			rpc.Request{ServiceMethod: "Svc.Mixed", Seq: 3}, mixed(), Args{A: 7, B: 8},
			Mixed{Small: -1}, []Node{{Name: "x", Kids: []Node{{}}}},
			map[string]Inner{"k": {Label: "v", Score: 1}},
			// Sent before its element type's definition, numbered after it.
			[]Inner{{Label: "k"}, {}},
		},
	}
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "gobfixtures:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 3 && args[0] == "single" {
		return single(args[1], args[2], os.Stdout)
	}
	if len(args) != 2 {
		return errors.New("usage: gobfixtures gen DIR | encode NAME | single NAME I | decode KIND")
	}
	switch args[0] {
	case "gen":
		return gen(args[1])
	case "encode":
		return encode(args[1], os.Stdout)
	case "decode":
		return decode(args[1], os.Stdin, os.Stdout)
	}
	return fmt.Errorf("unknown command %q", args[0])
}

func gen(dir string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	var names []string
	for name := range fixtures() {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		// A fresh process per fixture, so type ids start at 65 each time.
		out, err := exec.Command(self, "encode", name).Output()
		if err != nil {
			return fmt.Errorf("encode %s: %w", name, err)
		}
		if err := os.WriteFile(filepath.Join(dir, name+".hex"), out, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// lineWriter prints every Write (gob writes one message per call) as a line of hex.
type lineWriter struct{ w io.Writer }

func (l lineWriter) Write(p []byte) (int, error) {
	_, err := fmt.Fprintln(l.w, hex.EncodeToString(p))
	return len(p), err
}

func encode(name string, w io.Writer) error {
	values, ok := fixtures()[name]
	if !ok {
		return fmt.Errorf("no fixture %q", name)
	}
	enc := gob.NewEncoder(lineWriter{w})
	for _, v := range values {
		if err := enc.Encode(v); err != nil {
			return err
		}
	}
	return nil
}

func single(name, index string, w io.Writer) error {
	values, ok := fixtures()[name]
	if !ok {
		return fmt.Errorf("no fixture %q", name)
	}
	i, err := strconv.Atoi(index)
	if err != nil || i < 0 || i >= len(values) {
		return fmt.Errorf("fixture %s has no value %q", name, index)
	}
	return gob.NewEncoder(lineWriter{w}).Encode(values[i])
}

func decode(kinds string, r io.Reader, w io.Writer) error {
	text, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	raw, err := hex.DecodeString(strings.Join(strings.Fields(string(text)), ""))
	if err != nil {
		return err
	}
	dec := gob.NewDecoder(bytes.NewReader(raw))
	out := json.NewEncoder(w)
	cycle := strings.Split(kinds, ",")
	for i := 0; ; i++ {
		var v any
		switch kind := cycle[i%len(cycle)]; kind {
		case "args":
			v = new(Args)
		case "nested":
			v = new(Nested)
		case "int":
			v = new(int)
		case "string":
			v = new(string)
		case "float":
			v = new(float64)
		case "slice":
			v = new([]int64)
		case "map":
			v = new(map[string]int)
		case "empty":
			v = new(struct{})
		case "mixed":
			v = new(Mixed)
		case "nodes":
			v = new([]Node)
		case "innermap":
			v = new(map[string]Inner)
		case "inners":
			v = new([]Inner)
		case "request":
			v = new(rpc.Request)
		case "response":
			v = new(rpc.Response)
		case "skip":
			v = nil
		default:
			return fmt.Errorf("unknown kind %q", kind)
		}
		if err := dec.Decode(v); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
		if err := out.Encode(v); err != nil {
			return err
		}
	}
}
