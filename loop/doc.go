// Package loop runs AMQP 0-9-1 connections on an event loop, with
// completion callbacks: Pika's SelectConnection for Go. Threading rule: a
// [Loop] and everything it owns — its connections, channels, consumers,
// deliveries and timers — belong to the one goroutine that calls
// [Loop.Run]. Their methods must be called on that goroutine (from a
// callback, a function given to [Loop.Post], a timer of [Loop.AfterFunc],
// or before Run starts by the goroutine that then calls it), and every
// callback runs on it. [Loop.Post] is the only call safe from other
// goroutines. Code on the loop therefore needs no lock, and a callback
// that blocks blocks every connection of the loop.
//
// The name says what the caller owns: not a client with its own
// goroutines like package pika, but a loop that it runs, on which many
// connections and the application's callbacks take turns. It reads
// loop.New, loop.Conn, loop.Channel.
//
// # Use
//
//	l, err := loop.New()
//	...
//	l.Dial("amqp://guest:guest@localhost:5672/", func(c *loop.Conn, err error) {
//		if err != nil { ... }
//		c.Channel(func(ch *loop.Channel, err error) {
//			ch.QueueDeclare("hello", pika.QueueDeclareOptions{}, func(q pika.Queue, err error) {
//				ch.Publish("", q.Name, pika.Message{Body: []byte("hi")})
//			})
//		})
//	})
//	err = l.Run(ctx) // until ctx ends
//
// Every call that talks to the broker returns at once and reports its
// outcome to a callback; the options and result types are package pika's
// (pika.QueueDeclareOptions, pika.Queue, pika.Message, ...), and so are the
// errors (*pika.Error with its reply code, pika.ErrClosed,
// pika.ErrNacked, ...).
//
// # Order
//
// Callbacks of one channel run in the order of the calls that started
// them: a callback never runs before the callback of an earlier call on
// the same channel, publish confirmations included. Notifications (a
// delivery to a consumer's handler, a return, a flow change, a consumer's
// end, the channel's close) take their place when they arrive, after the
// callbacks of the calls made before. A delivery thus waits for the
// confirmations of messages published earlier on its channel: consume and
// publish on different channels when that matters. Callbacks never run
// inside the call that starts their work, even when it fails at once.
//
// # I/O paths
//
// On Linux (epoll) and on macOS and the BSDs (kqueue), a plain TCP
// connection is a non-blocking socket watched by the loop: no goroutine,
// and no buffer while idle (the loop has one 64 KiB read buffer for all
// its connections). The goroutines of a loop are then constant in the
// number of connections: the one running Run, and a short-lived goroutine
// per dial (name resolution and TCP connect block in Go). Measured with
// 10,000 idle connections with heartbeats and recovery on (BENCHMARKS.md):
// about 3.2 KiB of Go heap and 3.6 KiB of resident memory per connection,
// 0.20 of pika.Conn's and 0.15 of amqp091-go's heap, and no goroutine.
// Connections of a Loop share what they can: one Config when dialed with
// the same (see Loop.DialConfig), and one server-properties table per
// broker; an idle connection holds no recovery state until it declares
// something, consumes, registers an OnRecovery handler or is lost. With
// 1,000 connections to RabbitMQ on one loop, each publishing 10 messages a
// second with confirms, every message was confirmed, at 0.72 of the client
// CPU per message of 1,000 pika.Conns and 0.59 of amqp091-go's
// (BENCHMARKS.md).
//
// TLS connections, connections made by a Config.Dial that returns
// something other than a *net.TCPConn or *net.UnixConn, and every
// connection on other platforms take the fallback path: a reader
// goroutine per connection that hands each read to the loop with Post and
// waits until the loop has taken it, and a writer goroutine that writes
// what the loop queued — two goroutines and a 32 KiB read buffer per
// connection, and a hand-over between goroutines per read: measured, about
// 42 KiB of Go heap and stacks and 18 KiB of resident memory per idle
// connection, against the descriptor path's 3.4 and 4.9 in the same run of
// 2,000 connections (BENCHMARKS.md).
//
// # Hooks, credentials
//
// A Conn reports to the hooks of pika.Config.Hooks (see pika.Hook) as a
// pika.Conn does, so that the plugins otelpika and prompika observe it
// unchanged, with two differences. Every hook runs on the loop's
// goroutine, synchronously, at the moment of the event (a slow hook delays
// the whole loop); the end of a consumer or a channel is reported when its
// OnEnd or OnClose handlers run, in the channel's callback order. And the
// *pika.Conn, *pika.Channel, *pika.Consumer and *pika.Delivery they get
// are stand-ins for this package's values, whose accessors answer for them
// (see pika.Hook). ProcessHooks run around each call of a consumer's
// handler, which finds their context in Delivery.Context. BytesHooks
// count the AMQP bytes the Conn read and handed to its transport (on a TLS
// connection, without the TLS records' overhead that pika.Conn counts).
// Without hooks, each event costs a nil check and Publish allocates
// nothing more.
//
// pika.Config.Credentials is called at each dial on the dial goroutine,
// never on the loop's; with Config.SecretRefresh, a loop timer gets a fresh
// password from it (on a goroutine of its own) and hands it to the broker
// with Conn.UpdateSecret. A panic in it fails the dial, or the refresh,
// with an error naming it. Run waits for these goroutines: a Credentials
// that ignores its ctx and blocks delays Run's return until it returns.
//
// # Recovery
//
// Unless pika.Config.DisableRecovery is set, a Conn that loses its
// connection without the application asking (network error, heartbeat
// timeout, a broker's forced close) recovers as a pika.Conn does, with the
// same Config fields and rules (the topology record and the restore plan
// are shared with package pika): it reconnects after the delays of
// Config.Reconnect, over every address of Config.Addrs (ShuffleAddrs
// honoured), and restores, in this order, its channels with their
// numbers, QoS, confirm and transaction modes; the exchanges, queues
// (server-named ones get new names, followed by their bindings and
// consumers; an x-expires queue that expired meanwhile is forgotten) and
// bindings declared through it; its consumers, with their tags; and the
// messages published in confirm mode whose confirmation the loss cut off,
// republished in their order before anything new (unless
// Config.DisableRepublish: they then resolve with pika.ErrOutcomeUnknown
// at the loss). Config.RecoveryFilter leaves chosen entities out. The
// Conn, its Channels and Consumers stay the same values, and every step
// runs on the loop: the waits are loop timers, the restore a chain of
// callbacks, and nothing blocks the loop goroutine.
//
// Conn.OnRecovery reports each step as a pika.RecoveryEvent (its handlers
// run after the work at hand, so the first deliveries to a restarted
// consumer may come before the event that reports the restart): the loss,
// each attempt with its delay, the recovery with its pika.RecoveryReport,
// or the end of attempts, after which the Conn closes with a
// *pika.RecoveryError (OnClose; outstanding confirmations then resolve
// with pika.ErrOutcomeUnknown). As with pika.Conn, a broker that refuses
// an attempt's login or virtual host, or closes an attempt's connection
// with a code not recovered from at the first loss (403 ACCESS_REFUSED,
// 530 NOT_ALLOWED, ...), ends the recovery at once with that error. While the Conn recovers, calls fail at
// once with pika.ErrRecovering (Conn.Recovering tells; retry from the
// RecoveryRecovered event): a Conn behaves as a pika.Conn with
// Config.FailWhileRecovering set, and ignores the field. pika.Conn's
// default, calls that wait for the recovery bounded by their ctx, has no
// equivalent on a loop: a call cannot wait, and holding the calls of an
// outage to send them afterwards would keep a queue that grows with the
// outage, with no ctx to end a call's wait. Publish and PublishConfirm
// return the error; other calls give it to their callback in their
// channel's order, so after the confirmations of messages published before
// the loss, which wait for their republished copies: until then each such
// call holds its callback (an application that retries on a timer while
// its Conn recovers should check Conn.Recovering instead of calling).
// Calls in flight at the loss fail with its cause, in their channel's
// order, likewise. Acknowledgements of deliveries from before the loss
// fail with pika.ErrStaleDelivery and are not sent (delivery tags go on
// increasing across recoveries), and a transaction open at the loss fails
// its TxCommit with pika.ErrTxLost.
//
// RabbitMQ cancels the consumers of a queue that is deleted, and also of a
// classic queue whose node goes down (the queue comes back with its node).
// With recovery on, a consumer the broker cancels is therefore not ended at
// once: the loop checks its queue with a passive declare on a channel of
// its own; a queue that is gone ends the consumer with
// pika.ErrConsumerCancelled (and is forgotten), one that is there gets the
// same Consumer back with its tag (RecoveryConsumerRestored), and one whose
// node is down is checked again after each Config.Reconnect delay
// (RecoveryConsumerWaiting, with an error matching
// pika.ErrQueueUnavailable). A restore that finds a consumer's queue
// unavailable does the same. As in pika.Conn, a check the broker does not
// answer within Config.HandshakeTimeout + Config.DialTimeout counts as a
// failed one (a wait, then another check), and a restart (basic.consume)
// not answered within Config.HandshakeTimeout ends the revival, leaving
// the consumer to its late consume-ok.
//
// Close stops a recovery and ends the Conn with nil. Republishing keeps a
// copy of each message published in confirm mode until its confirmation
// (a mandatory message the broker returned before the loss is not
// republished: it keeps its outcome); the copies count against
// Config.MaxUnconfirmed (see Bounds), which therefore bounds their memory.
// Nothing else grows with the length of an outage: one timer waits for
// the next attempt, one goroutine dials, and the calls refused meanwhile
// hold only the callbacks described above. Config.Credentials is called
// at each attempt's dial, as at the first. The hooks hear of each link (a
// DisconnectHook for the lost one, a ConnectHook for each attempt), and
// the RecoveryHooks get every recovery event as it happens.
//
// # Bounds
//
// A loop never waits, so where pika.Conn's Publish waits for room, a
// Conn's fails at once and the application paces itself. The bytes queued
// for the socket are not bounded (Config.WriteBufferLimit is ignored): see
// Conn.Buffered. The messages of a channel in confirm mode awaiting their
// outcome are bounded by Config.MaxUnconfirmed (default
// pika.DefaultMaxUnconfirmed, negative for no bound), the copies kept for
// republishing included: at the bound, Publish and PublishConfirm fail
// with ErrTooManyUnconfirmed and send nothing. A message leaves the count
// (Channel.Unconfirmed) when its ack or nack arrives, before its callback
// runs, so publishing again from PublishConfirm callbacks keeps to the
// bound without polling.
package loop
