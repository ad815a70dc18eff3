package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// usageError is a mistake on the command line (exit status 1). The message
// names the command and what was wrong; a hint to the command's --help
// follows it.
type usageError struct {
	cmd string // the command, for the --help hint; may be empty
	msg string
}

func (e *usageError) Error() string {
	if e.cmd == "" {
		return e.msg
	}
	return e.cmd + ": " + e.msg + "\nRun 'pika " + e.cmd + " --help' for usage."
}

// usagef returns a usageError for command cmd.
func usagef(cmd, format string, args ...any) error {
	return &usageError{cmd: cmd, msg: fmt.Sprintf(format, args...)}
}

// flagSet is a command's flags with its hand-written help text.
type flagSet struct {
	*flag.FlagSet
	cmd  string // "publish", "declare queue", ...
	help string // the whole help text
	e    *env
}

// newFlagSet returns the flag set of command cmd, with --url already
// defined (it sets e.url).
func newFlagSet(e *env, cmd, help string) *flagSet {
	fs := &flagSet{FlagSet: flag.NewFlagSet("pika "+cmd, flag.ContinueOnError), cmd: cmd, help: help, e: e}
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.Func("url", "broker URL", func(s string) error { e.url = s; return nil })
	return fs
}

// parse parses args, flags and arguments in any order ("--" ends the
// flags), and returns the arguments. For --help it prints the help text to
// standard output and returns errHelp.
func (fs *flagSet) parse(args []string) ([]string, error) {
	if flagSetHook != nil {
		flagSetHook(fs.FlagSet)
	}
	var flags, pos []string
	written := map[string]string{} // flag name -> as written ("--count", "-count")
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			pos = append(pos, a)
			continue
		}
		flags = append(flags, a)
		name, _, hasValue := strings.Cut(strings.TrimPrefix(a[1:], "-"), "=")
		written[name] = strings.SplitN(a, "=", 2)[0]
		f := fs.Lookup(name)
		if f == nil {
			if name == "h" || name == "help" {
				continue // Parse handles it
			}
			return nil, &usageError{cmd: fs.cmd, msg: "unknown flag " + written[name]}
		}
		if hasValue {
			continue
		}
		if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && bf.IsBoolFlag() {
			continue
		}
		if i+1 < len(args) {
			flags = append(flags, args[i+1])
			i++
		}
	}
	if err := fs.Parse(flags); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			io.WriteString(fs.e.stdout, fs.help)
			return nil, errHelp
		}
		return nil, &usageError{cmd: fs.cmd, msg: flagMessage(err.Error(), written)}
	}
	return pos, nil
}

// flagMessage rewrites the flag package's "-name" in msg as the user wrote
// the flag ("--name").
func flagMessage(msg string, written map[string]string) string {
	for name, w := range written {
		msg = strings.ReplaceAll(msg, " -"+name+":", " "+w+":")
		if strings.HasSuffix(msg, ": -"+name) {
			msg = strings.TrimSuffix(msg, "-"+name) + w
		}
	}
	return msg
}

// args checks the number of arguments: want names them, in order.
func (fs *flagSet) args(pos []string, want ...string) error {
	if len(pos) == len(want) {
		return nil
	}
	if len(pos) < len(want) {
		return usagef(fs.cmd, "missing %s", strings.Join(want[len(pos):], " "))
	}
	return usagef(fs.cmd, "too many arguments: %s (want %s)", quoteAll(pos[len(want):]), strings.Join(want, " "))
}

func quoteAll(s []string) string {
	q := make([]string, len(s))
	for i, x := range s {
		q[i] = strconv.Quote(x)
	}
	return strings.Join(q, " ")
}

// flagSetHook, when set (by tests), sees every command's flag set before
// it parses.
var flagSetHook func(*flag.FlagSet)

// multiFlag collects every value of a repeatable flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// stringFlag is a string flag that records whether it was given, so an
// explicit empty value differs from an absent one.
type stringFlag struct {
	value string
	set   bool
}

func (s *stringFlag) String() string     { return s.value }
func (s *stringFlag) Set(v string) error { s.value, s.set = v, true; return nil }
