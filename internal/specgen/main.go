// Command specgen generates the AMQP 0-9-1 protocol tables and method codecs
// of package wire from the RabbitMQ JSON spec (ids, fields, types, constants,
// content properties) and the extended XML spec (which methods answer which,
// which peer sends each method, labels for doc comments).
//
// Usage:
//
//	specgen -json amqp-rabbitmq-0.9.1.json -xml amqp0-9-1.extended.xml -out methods_gen.go
//
// The output depends only on the two spec files, so running it twice gives
// the same bytes. Where the XML is wrong or incomplete, a short errata list
// in this program says what is corrected and why; the program fails when an
// erratum no longer changes anything, and whenever the two files disagree.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
)

func main() {
	jsonPath := flag.String("json", "", "path of amqp-rabbitmq-0.9.1.json")
	xmlPath := flag.String("xml", "", "path of amqp0-9-1.extended.xml")
	out := flag.String("out", "", "output Go file")
	flag.Parse()
	if *jsonPath == "" || *xmlPath == "" || *out == "" || flag.NArg() != 0 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*jsonPath, *xmlPath, *out); err != nil {
		fmt.Fprintln(os.Stderr, "specgen:", err)
		os.Exit(1)
	}
}

func run(jsonPath, xmlPath, out string) error {
	s, err := load(jsonPath, xmlPath)
	if err != nil {
		return err
	}
	src, err := generate(s, []string{filepath.Base(jsonPath), filepath.Base(xmlPath)})
	if err != nil {
		return err
	}
	// Write beside the target and rename, so a failed run never leaves a
	// half-written file behind.
	tmp, err := os.CreateTemp(filepath.Dir(out), ".specgen-*.go.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(src); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), out)
}
