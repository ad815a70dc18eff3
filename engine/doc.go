// Package engine is the client side of AMQP 0-9-1 as a state machine that
// performs no I/O. It opens no socket, starts no goroutine, takes no lock
// and never reads the clock: bytes, time and requests go in, and events and
// bytes to send come out. The default client (package pika) drives it with
// goroutines over a net.Conn; any event loop, or a test, can drive it the
// same way.
//
// # Driving an engine
//
// A driver owns one [Conn] and one transport (a TCP or TLS connection, a
// pipe, anything that moves bytes in order). The whole contract:
//
//  1. New(cfg), then Start(now). Start queues the protocol header.
//  2. After every call into the engine, do three things, in any order:
//     write out what AppendOutgoing (or SwapOutgoing) returns; take events
//     with NextEvent until it returns false; read Deadline and arm a timer
//     for it (zero means no timer).
//  3. When bytes arrive from the transport, pass them to Receive. When the
//     timer fires, call Tick with the current time. When the transport fails
//     or reaches EOF, call Fail with the error.
//  4. Application requests are calls: OpenChannel, Call (synchronous
//     methods: declare, bind, consume, get, qos, ...), Send (asynchronous
//     methods and no-wait variants), Publish, Ack/Nack/Reject, CloseChannel,
//     Close. Each returns at once; replies arrive later as events carrying
//     the RequestID the call returned.
//  5. When EventClosed comes out, write whatever AppendOutgoing still holds
//     (it may be a close-ok the server waits for), then close the transport.
//     EventClosed is always the last event.
//
// The engine calls no code of the application's but the SASL mechanisms of
// Config.Mechanisms, inside Receive. A driver that holds a lock around
// engine calls sets Config.DeferAuth instead: each SASL step then comes out
// as EventAuth, the driver runs the mechanism (Conn.Mechanism) outside its
// lock, and passes the result to AuthResponse.
//
// Nothing happens between calls: the engine never acts on its own, so a
// driver that forgets step 2 simply stalls, and one that does it after every
// call never misses anything. Events and outgoing bytes accumulate until
// taken: a driver that takes them late uses memory, not correctness.
//
// # Channels and requests
//
// A channel has at most one synchronous request on the wire. Requests made
// while one is in flight wait in order and go out as replies arrive, and each
// reply is matched to its request: replies carry the RequestID of the call.
// Asynchronous methods (publish, ack, ...) keep their place in that order: a
// publish made after a queued declare goes out after it. Bytes waiting on
// channels that way are counted by QueuedLen, apart from OutgoingLen; a
// driver bounding its write buffer counts both. A reply that
// answers nothing pending closes the connection with COMMAND_INVALID.
//
// A channel.close from the server fails the channel's pending requests (an
// EventReply with Err each), answers close-ok and emits EventChannelClosed;
// the connection and its other channels go on. A connection.close from the
// server fails everything, answers close-ok and emits EventClosed.
//
// # Content
//
// Publish writes a message's method, header and body frames (split by the
// negotiated frame_max) together, so they are never interleaved with other
// frames of the channel. Inbound deliveries, returns and get-ok results are
// assembled and emitted once their body is complete; the body is a fresh
// slice owned by the receiver. Frames out of order, a body larger than its
// header announced, or a header announcing more than Config.MaxBodySize end
// the connection with UNEXPECTED_FRAME or FRAME_ERROR, sent to the server in
// connection.close.
//
// # Confirms
//
// After confirm.select (via Call or Send), Publish returns each message's
// delivery tag. The broker's basic.ack and basic.nack become EventConfirm,
// in wire order: a basic.return for a mandatory message comes out before the
// confirmation of the same message. [ConfirmSet] settles tags in amortised
// O(1), multiple acks included; drivers may use it to map tags to waiters.
//
// # Time
//
// The engine learns the time only from Start and Tick. Deadline says when
// Tick is due: for the handshake timeout, for sending a heartbeat (after H/2
// without outbound traffic) and for declaring the peer dead (after 2*H
// without inbound traffic, where H is the negotiated heartbeat).
//
// # Errors
//
// Errors with a reply code are [*Error] values, scoped like the protocol:
// Conn says whether the connection or only a channel closed, Server who
// closed it. Handshake failures wrap ErrAuthentication, ErrVhostRefused,
// ErrHandshakeClosed, ErrHandshakeTimeout, ErrNoMechanism,
// ErrProtocolVersion or ErrNotAMQP (test with errors.Is; a server of
// another protocol is a *NotAMQPError showing the start of its answer);
// when the server sent a close, errors.As also finds its *Error.
package engine
