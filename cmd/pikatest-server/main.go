// Command pikatest-server runs the in-process test broker of package
// pikatest as a standalone server, for trying clients and tools against it
// (pika perf, other languages' clients) without RabbitMQ.
//
//	pikatest-server [-addr 127.0.0.1:5673] [-user guest:guest] [-vhost /]
//
// It prints the URL to dial and serves until interrupted. It is a test
// tool: state lives in memory and is lost when it exits.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/pika-go/pika/pikatest"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:5673", "address to listen on")
	user := flag.String("user", "guest:guest", "user:password allowed to log in")
	vhost := flag.String("vhost", "/", "virtual host")
	flag.Parse()
	name, pass, ok := strings.Cut(*user, ":")
	if !ok || name == "" {
		fmt.Fprintln(os.Stderr, "pikatest-server: -user wants user:password")
		os.Exit(2)
	}
	b, err := pikatest.New(pikatest.Config{Addr: *addr, Users: map[string]string{name: pass}, VHosts: []string{*vhost}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "pikatest-server:", err)
		os.Exit(1)
	}
	fmt.Println(b.URL())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	b.Close()
}
