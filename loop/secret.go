package loop

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/engine"
	"github.com/pika-go/pika/internal/amqpdial"
)

// Credentials and secrets: pika.Config.Credentials is asked for the
// username and password at each dial, on the dial goroutine (it may block,
// say to fetch an OAuth 2 token), and Config.SecretRefresh hands a fresh
// password to the broker with connection.update-secret, from a loop timer;
// the Credentials call of a refresh runs on a goroutine of its own, never
// on the loop's.

// errSecretRefreshNeedsCredentials refuses a Config with SecretRefresh and
// no Credentials.
var errSecretRefreshNeedsCredentials = errors.New("loop: Config.SecretRefresh is set but Config.Credentials is not: there is nothing to refresh the secret from")

// secretState is what a Conn with Config.Credentials, or whose secret was
// updated, keeps: nil for the others.
type secretState struct {
	credentials func(ctx context.Context) (username, password string, err error)
	refresh     time.Duration
	timeout     time.Duration // bounds a refresh's Credentials call and update
	logger      *slog.Logger  // failed refreshes at Warn level; nil: not logged
	timer       *Timer        // the next refresh
	running     bool          // a refresh is under way
	secret      string        // the secret the broker last accepted through UpdateSecret
	secretSet   bool
}

// login is the username and password one dial logs in with.
type login struct{ user, pass string }

// askCredentials calls Config.Credentials for a dial, bounded by
// DialTimeout; on the dial goroutine.
func askCredentials(ctx context.Context, cfg *pika.Config) (*login, error) {
	if cfg.Credentials == nil {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	u, p, err := amqpdial.Credentials(ctx, cfg.Credentials)
	if err != nil {
		return nil, err
	}
	return &login{u, p}, nil
}

// engineConfigFor returns the engine configuration a dial logs in with:
// cfg's, with the credentials the dial got, or else the secret the broker
// last accepted.
func (c *Conn) engineConfigFor(lg *login) engine.Config {
	switch {
	case lg != nil:
		return c.cfg.EngineConfigWithCredentials(lg.user, lg.pass)
	case c.sec != nil && c.sec.secretSet:
		return c.cfg.EngineConfigWithCredentials("", c.sec.secret)
	}
	return c.cfg.EngineConfig()
}

// newSecretState returns the secret state of a Conn dialled with cfg, nil
// when it needs none.
func newSecretState(cfg *pika.Config) *secretState {
	if cfg.Credentials == nil {
		return nil
	}
	s := &secretState{credentials: cfg.Credentials, refresh: cfg.SecretRefresh, logger: cfg.Logger}
	s.timeout = max(cfg.SecretRefresh, cfg.HandshakeTimeout, engine.DefaultHandshakeTimeout)
	return s
}

// UpdateSecret replaces the connection's secret (for example an expiring
// OAuth 2 token) with connection.update-secret and calls cb, which may be
// nil, with the broker's answer. Once the broker has accepted it, the new
// secret is kept as the password the Conn logs in with if it dials again
// (a recovery), unless Config.Credentials provides the credentials.
func (c *Conn) UpdateSecret(secret, reason string, cb func(error)) {
	fail := func(err error) {
		if cb != nil {
			c.l.defer_(func() { cb(err) })
		}
	}
	if c.Recovering() && !c.linkUp() {
		fail(pika.ErrRecovering)
		return
	}
	if c.eng == nil || c.closed || !c.open {
		err := c.err
		if err == nil {
			err = pika.ErrClosed
		}
		fail(err)
		return
	}
	id, err := c.eng.UpdateSecret(secret, reason)
	if err != nil {
		fail(err)
		return
	}
	c.addReq(id, func(ev engine.Event) {
		if ev.Err == nil {
			if c.sec == nil {
				c.sec = &secretState{}
			}
			c.sec.secret, c.sec.secretSet = secret, true
		}
		if cb != nil {
			cb(ev.Err)
		}
	})
	c.l.markDirty(c)
}

// startSecretRefresh arms the first refresh once the connection is open.
func (c *Conn) startSecretRefresh() {
	s := c.sec
	if s == nil || s.refresh <= 0 || s.timer != nil {
		return
	}
	s.timer = c.l.AfterFunc(s.refresh, c.refreshSecret)
}

// stopSecretRefresh stops the refreshes (the connection ended).
func (c *Conn) stopSecretRefresh() {
	if s := c.sec; s != nil && s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
}

// refreshSecret runs on the loop at each tick: it asks Credentials on a
// goroutine of its own, then hands the password to the broker. The next
// tick is armed now: a slow refresh does not delay it, and a refresh still
// under way at the next tick makes that tick skip.
func (c *Conn) refreshSecret() {
	s := c.sec
	if s == nil || c.closing() {
		return
	}
	s.timer = c.l.AfterFunc(s.refresh, c.refreshSecret)
	if s.running {
		return
	}
	s.running = true
	l := c.l
	ctx, cancel := context.WithTimeout(l.base, s.timeout)
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		defer cancel()
		_, pass, err := amqpdial.Credentials(ctx, s.credentials)
		l.Post(func() {
			if c.closing() {
				s.running = false
				return
			}
			if err != nil {
				c.refreshDone(err)
				return
			}
			c.UpdateSecret(pass, "pika: Config.SecretRefresh", c.refreshDone)
		})
	}()
}

// refreshDone ends a refresh; a failure is logged at Warn level.
func (c *Conn) refreshDone(err error) {
	c.sec.running = false
	if err != nil && !c.closing() && c.sec.logger != nil {
		c.sec.logger.Warn("pika: secret refresh failed", "error", err)
	}
}

// closing reports whether the connection ended or Close was called.
func (c *Conn) closing() bool { return c.closed || c.closeTimer != nil }
