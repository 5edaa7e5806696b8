// A Go service with no tracing code: go_chain PORT [DOWNSTREAM].
// GET /client/N calls DOWNSTREAM/leaf/N with net/http's client, whose
// transport writes the request from a goroutine of its own, on whichever
// thread runs it; anything else answers "leaf-N".
//
// GET /hop/N calls DOWNSTREAM/hop/N instead (the TLS tests' chain). It
// listens on 127.0.0.1, or on $BIND.
//
// With GO_CHAIN_TLS_CERT and GO_CHAIN_TLS_KEY set it serves HTTPS; an
// https DOWNSTREAM is verified against the system roots or SSL_CERT_FILE.
// Both ends negotiate HTTP/2 by ALPN, as net/http does by default.
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
)

func main() {
	port := os.Args[1]
	down := ""
	if len(os.Args) > 2 {
		down = os.Args[2]
	}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		parts := strings.Split(r.URL.Path, "/")
		n := "0"
		if len(parts) > 2 {
			n = parts[2]
		}
		if down == "" || (parts[1] != "client" && parts[1] != "hop") {
			fmt.Fprintf(w, "leaf-%s", n)
			return
		}
		next := "/leaf/"
		if parts[1] == "hop" {
			next = "/hop/"
		}
		resp, err := http.Get(down + next + n)
		if err != nil {
			w.WriteHeader(http.StatusBadGateway)
			fmt.Fprint(w, err)
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		fmt.Fprintf(w, "%s>%s", n, body)
	})
	host := os.Getenv("BIND")
	if host == "" {
		host = "127.0.0.1"
	}
	addr := host + ":" + port
	var err error
	if cert, key := os.Getenv("GO_CHAIN_TLS_CERT"), os.Getenv("GO_CHAIN_TLS_KEY"); cert != "" {
		err = http.ListenAndServeTLS(addr, cert, key, nil)
	} else {
		err = http.ListenAndServe(addr, nil)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
