package pipes_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"strings"
	"time"
)

// ExampleFiles shows the file service: alice adds a file, bob learns from
// her announcement that she holds it, fetches it (every chunk verified
// against the file's id) and reads it.
func ExampleFiles() {
	dir, _ := os.MkdirTemp("", "pipes-example-")
	defer os.RemoveAll(dir)
	pa, alice := exampleNode(dir)
	defer pa.Close()
	pb, bob := exampleJoiner(dir, alice, "laptop")
	defer pb.Close()

	ctx := context.Background()
	id, err := alice.Files().AddReader(ctx, "notes.txt", strings.NewReader("minutes of the meeting\n"))
	if err != nil {
		log.Fatal(err)
	}
	for { // the announcement takes a moment to arrive
		if st, err := bob.Files().Stat(ctx, id); err == nil && len(st.Holders) > 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := bob.Files().Fetch(ctx, id, nil); err != nil {
		log.Fatal(err)
	}
	r, err := bob.Files().Open(id)
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	b, _ := io.ReadAll(r)
	st, _ := bob.Files().Stat(ctx, id)
	fmt.Printf("%s, %d bytes, here: %v, %d holders: %s", st.Name, st.Size, st.Local, len(st.Holders), b)
	// Output:
	// notes.txt, 23 bytes, here: true, 2 holders: minutes of the meeting
}
