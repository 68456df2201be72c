// Package echo is the Go net/rpc peer of the Switchboard benchmark: the
// message and the service shared by the server and the client.
package echo

// Message is the benchmark message, the same shape as the Rust peers'.
type Message struct {
	Id      uint64
	Name    string
	Payload []byte
}

// Echo is the service registered with net/rpc as "Echo".
type Echo struct{}

// Echo returns its argument.
func (Echo) Echo(args *Message, reply *Message) error {
	*reply = *args
	return nil
}
