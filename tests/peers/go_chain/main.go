// A Go service with no tracing code: go_chain PORT [DOWNSTREAM].
// GET /client/N calls DOWNSTREAM/leaf/N with net/http's client, whose
// transport writes the request from a goroutine of its own, on whichever
// thread runs it; anything else answers "leaf-N".
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
		if down == "" || parts[1] != "client" {
			fmt.Fprintf(w, "leaf-%s", n)
			return
		}
		resp, err := http.Get(down + "/leaf/" + n)
		if err != nil {
			w.WriteHeader(http.StatusBadGateway)
			fmt.Fprint(w, err)
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		fmt.Fprintf(w, "%s>%s", n, body)
	})
	if err := http.ListenAndServe("127.0.0.1:"+port, nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
