// Package standin lets package loop hand its connections, channels,
// consumers and deliveries to the hooks of package pika, whose interfaces
// take *pika.Conn, *pika.Channel, *pika.Consumer and *pika.Delivery.
// Package pika makes the stand-ins: it sets the constructors below when it
// is initialized (package loop imports it, so they are set before loop
// uses them).
package standin

import (
	"net"

	"github.com/pika-go/pika/engine"
	"github.com/pika-go/pika/wire"
)

// ConnView is what a stand-in *pika.Conn answers its accessors with.
type ConnView interface {
	IsClosed() bool
	Err() error
	IsRecovering() bool
	IsBlocked() (bool, string)
	ServerProperties() wire.Table // a copy the caller may modify
	Tuning() engine.Tuning
	LocalAddr() net.Addr
	RemoteAddr() net.Addr
}

// ChannelView is what a stand-in *pika.Channel answers IsClosed and Err
// with.
type ChannelView interface {
	IsClosed() bool
	Err() error
}

// ConsumerView is what a stand-in *pika.Consumer answers Queue with: the
// loop consumer's queue as it is now (recovery renames a server-named
// queue).
type ConsumerView interface {
	Queue() string
}

// The constructors, set by package pika.
var (
	// NewConn returns a *pika.Conn standing for v.
	NewConn func(v ConnView) any
	// NewChannel returns a *pika.Channel of conn (a stand-in *pika.Conn)
	// standing for a channel with number id.
	NewChannel func(conn any, id uint16, v ChannelView) any
	// NewConsumer returns a *pika.Consumer of ch (a stand-in
	// *pika.Channel) with tag, standing for a consumer whose queue v
	// tells.
	NewConsumer func(ch any, tag string, v ConsumerView) any
	// NewDelivery returns a *pika.Delivery of ch (a stand-in
	// *pika.Channel) whose exported fields the caller fills.
	NewDelivery func(ch any) any
)
