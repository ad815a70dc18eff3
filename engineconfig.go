package pika

import "github.com/pika-go/pika/engine"

// EngineConfig returns the configuration of package engine that a
// connection made with c logs in and tunes with: credentials, mechanisms,
// vhost, channel_max, frame_max, heartbeat, handshake timeout, body size
// limit, connection name and client properties. It is for drivers of
// package engine other than Conn (package loop, a driver of one's own): they
// take addresses, TLS and timeouts from c and the protocol settings from
// here, so that a URL means the same to every client.
//
// The mechanisms run inside engine.Conn.Receive (DeferAuth is false).
// Config.Credentials is not called: a driver that supports it calls it
// and logs in with EngineConfigWithCredentials.
func (c Config) EngineConfig() engine.Config {
	ecfg := c.engineConfig()
	ecfg.DeferAuth = false
	return ecfg
}

// EngineConfigWithCredentials is EngineConfig logging in with username and
// password as a Conn logs in with what Config.Credentials returned (or a
// secret the broker accepted through UpdateSecret): they replace Username
// and Password, and the credentials of the PlainAuth and AMQPlainAuth
// entries of Mechanisms; an empty username keeps the configured one.
func (c Config) EngineConfigWithCredentials(username, password string) engine.Config {
	return withCredentials(c.EngineConfig(), username, password)
}
