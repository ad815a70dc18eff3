package pika

import (
	"context"
	"errors"
	"time"

	"github.com/pika-go/pika/engine"
	"github.com/pika-go/pika/internal/amqpdial"
)

// loginConfig returns the engine configuration for a new connection
// attempt, with the credentials to log in with: those of
// Config.Credentials when set, else the secret the broker last accepted
// through UpdateSecret, else the Config's. The PLAIN and AMQPLAIN entries
// of Config.Mechanisms get the same secret.
func (c *Conn) loginConfig(ctx context.Context) (engine.Config, error) {
	ecfg := c.cfg.engineConfig()
	var user, pass string
	switch {
	case c.cfg.Credentials != nil:
		pctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
		u, p, err := amqpdial.Credentials(pctx, c.cfg.Credentials)
		cancel()
		if err != nil {
			return ecfg, err
		}
		user, pass = u, p
	default:
		c.mu.Lock()
		secret, set := c.secret, c.secretSet
		c.mu.Unlock()
		if !set {
			return ecfg, nil
		}
		pass = secret
	}
	return withCredentials(ecfg, user, pass), nil
}

// withCredentials returns ecfg logging in with user (unless empty) and
// pass: its Username and Password, and those of its PLAIN and AMQPLAIN
// mechanisms (copies: the Config's are not modified).
func withCredentials(ecfg engine.Config, user, pass string) engine.Config {
	if user != "" {
		ecfg.Username = user
	}
	ecfg.Password = pass
	if len(ecfg.Mechanisms) > 0 {
		ms := make([]Mechanism, len(ecfg.Mechanisms))
		for i, m := range ecfg.Mechanisms {
			named, wrapped := m.(namedMechanism)
			if wrapped {
				m = named.Mechanism
			}
			// set gives a copy of a built-in mechanism the credentials.
			set := func(u, p *string) {
				if user != "" {
					*u = user
				}
				*p = pass
			}
			switch m := m.(type) {
			case PlainAuth:
				set(&m.Username, &m.Password)
				ms[i] = m
			case *PlainAuth:
				cp := *m
				set(&cp.Username, &cp.Password)
				ms[i] = &cp
			case AMQPlainAuth:
				set(&m.Username, &m.Password)
				ms[i] = m
			case *AMQPlainAuth:
				cp := *m
				set(&cp.Username, &cp.Password)
				ms[i] = &cp
			default:
				ms[i] = m
			}
			if wrapped {
				// Keep the name read outside the lock (see engineConfig).
				ms[i] = namedMechanism{Mechanism: ms[i], name: named.name}
			}
		}
		ecfg.Mechanisms = ms
	}
	return ecfg
}

// errSecretRefreshNeedsCredentials is DialConfig's error for a Config with
// SecretRefresh and no Credentials.
var errSecretRefreshNeedsCredentials = errors.New("pika: Config.SecretRefresh is set but Config.Credentials is not: there is nothing to refresh the secret from")

// startSecretRefresh starts the goroutine of Config.SecretRefresh.
func (c *Conn) startSecretRefresh() {
	if c.cfg.SecretRefresh <= 0 {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.stopRefresh = cancel
	c.wg.Add(1)
	go c.refreshSecrets(ctx)
}

// refreshSecrets hands a fresh secret from Config.Credentials to the broker
// every Config.SecretRefresh, until the Conn closes.
func (c *Conn) refreshSecrets(ctx context.Context) {
	defer c.wg.Done()
	t := time.NewTicker(c.cfg.SecretRefresh)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
		if c.IsRecovering() {
			continue // the reconnection logs in with a fresh secret
		}
		if err := c.refreshSecret(ctx); err != nil && ctx.Err() == nil && c.log != nil {
			c.log.Warn("pika: secret refresh failed", "error", err)
		}
	}
}

// refreshSecret gets a secret from Config.Credentials and passes it to the
// broker, bounded by the refresh interval (and the handshake timeout).
func (c *Conn) refreshSecret(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, max(c.cfg.SecretRefresh, c.cfg.HandshakeTimeout))
	defer cancel()
	_, pass, err := amqpdial.Credentials(ctx, c.cfg.Credentials)
	if err != nil {
		return err
	}
	return c.UpdateSecret(ctx, pass, "pika: Config.SecretRefresh")
}
