package main

import "errors"

// Args is the argument of the classic net/rpc example.
type Args struct{ A, B int }

// Quotient is Arith.Divide's reply.
type Quotient struct{ Quo, Rem int }

// Inner is nested in Nested: by value in a slice, and behind a pointer.
type Inner struct {
	Name  string
	Tags  []string
	Score float64
}

// Nested exercises every kind of value the codecs must carry.
type Nested struct {
	Title  string
	Count  int64
	Ratio  float64
	Flag   bool
	Data   []byte
	Items  []Inner
	Labels map[string]int
	Ptr    *Inner
	Neg    int32
	Big    uint64
}

// Arith is the net/rpc documentation's example service.
type Arith int

// Multiply answers A*B.
func (t *Arith) Multiply(args *Args, reply *int) error {
	*reply = args.A * args.B
	return nil
}

// Divide answers A/B and A%B, or the application error "divide by zero".
func (t *Arith) Divide(args *Args, quo *Quotient) error {
	if args.B == 0 {
		return errors.New("divide by zero")
	}
	quo.Quo = args.A / args.B
	quo.Rem = args.A % args.B
	return nil
}

// Echo answers its argument.
type Echo int

// Nested answers its argument.
func (t *Echo) Nested(args *Nested, reply *Nested) error {
	*reply = *args
	return nil
}

// Bytes answers its argument.
func (t *Echo) Bytes(args []byte, reply *[]byte) error {
	*reply = args
	return nil
}

// Text answers its argument.
func (t *Echo) Text(args string, reply *string) error {
	*reply = args
	return nil
}
