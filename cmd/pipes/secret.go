package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// secretFlags are the ways to give a secret without putting it on the
// command line, where other users could read it in the process list.
type secretFlags struct {
	file   string
	env    string
	prompt string // what the terminal prompt asks for; "Network secret" if empty
}

func (s *secretFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&s.file, "secret-file", "", "read the secret from this file (first line)")
	cmd.Flags().StringVar(&s.env, "secret-env", "", "read the secret from this environment variable")
}

// read returns the secret from the file, the variable, or a prompt on the
// terminal (twice when confirm is set). Without a terminal the secret is
// read as one line of standard input.
func (s *secretFlags) read(a *app, confirm bool) (string, error) {
	switch {
	case s.file != "" && s.env != "":
		return "", errors.New("give --secret-file or --secret-env, not both")
	case s.file != "":
		b, err := os.ReadFile(s.file)
		if err != nil {
			return "", fmt.Errorf("secret file: %w", err)
		}
		return nonEmpty(strings.SplitN(string(b), "\n", 2)[0])
	case s.env != "":
		v, ok := os.LookupEnv(s.env)
		if !ok {
			return "", fmt.Errorf("environment variable %s is not set", s.env)
		}
		return nonEmpty(v)
	}
	if f, ok := a.in.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		prompt := s.prompt
		if prompt == "" {
			prompt = "Network secret"
		}
		fmt.Fprint(a.errOut, prompt+": ")
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(a.errOut)
		if err != nil {
			return "", err
		}
		if confirm {
			fmt.Fprint(a.errOut, "Again: ")
			b2, err := term.ReadPassword(int(f.Fd()))
			fmt.Fprintln(a.errOut)
			if err != nil {
				return "", err
			}
			if string(b) != string(b2) {
				return "", errors.New("the two secrets differ")
			}
		}
		return nonEmpty(string(b))
	}
	line, err := bufio.NewReader(a.in).ReadString('\n')
	if err != nil && line == "" {
		return "", errors.New("no secret: use --secret-file, --secret-env or type it at the prompt")
	}
	return nonEmpty(strings.TrimRight(line, "\r\n"))
}

func nonEmpty(s string) (string, error) {
	s = strings.TrimRight(s, "\r")
	if s == "" {
		return "", errors.New("the secret is empty")
	}
	return s, nil
}
