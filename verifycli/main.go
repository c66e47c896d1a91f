package main

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/tee-ingress/tee-ingress/evidence"
	"github.com/tee-ingress/tee-ingress/verifycli/report"
)

// Exit statuses.
const (
	exitOK    = 0 // no check failed
	exitFail  = 1 // a check failed
	exitError = 2 // usage, network or input error: no verdict
)

// Defaults of the flags.
const (
	defaultTimeout  = 30 * time.Second
	defaultDeadline = time.Minute
	defaultCTURL    = "https://crt.sh/"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, colorWanted(os.Stdout, os.LookupEnv))
	stop()
	os.Exit(code)
}

// colorWanted: colour only on a terminal, and never with NO_COLOR set or
// TERM=dumb.
func colorWanted(f *os.File, lookup func(string) (string, bool)) bool {
	if _, ok := lookup("NO_COLOR"); ok {
		return false
	}
	if t, _ := lookup("TERM"); t == "dumb" {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// cliError ends a run with exit status 2: what went wrong and what to do.
type cliError struct {
	err  error
	hint string
}

func (e *cliError) Error() string { return e.err.Error() }
func (e *cliError) Unwrap() error { return e.err }

func usageErr(hint, format string, args ...any) error {
	return &cliError{err: fmt.Errorf(format, args...), hint: hint}
}

// options are the parsed flags.
type options struct {
	json, strict, collateral bool
	timeout, deadline        time.Duration
	connect                  string
	tdxRootFile, caFile      string
	resolver                 string
	ctURL                    string // "" when CT is off
	caaIssuer                string
	methods                  []string
	appID, composeHash       string
	composeFile              string
	reportData               []byte
	tokenFile                string        // webhook: the DNS_WEBHOOK_TOKEN, in a file
	maxAge                   time.Duration // webhook: the oldest payload accepted
	color                    bool
	stdin                    io.Reader // for quote -

	// Loaded from the files named above.
	tdxRoot     []byte
	extraRoots  []*x509.Certificate
	composeJSON []byte
	now         time.Time
}

// verifyOptions are the evidence options every command passes.
func (o *options) verifyOptions() evidence.VerifyOptions {
	vo := evidence.VerifyOptions{
		TrustedRootsPEM: o.tdxRoot,
		AppID:           o.appID,
		ComposeHash:     o.composeHash,
		ComposeJSON:     o.composeJSON,
		Now:             o.now,
		Collateral:      o.collateral,
	}
	if o.collateral {
		vo.Getter = &collateralGetter{timeout: o.timeout}
	}
	return vo
}

// result is what a command hands back for printing.
type result struct {
	checks      []evidence.Check
	identity    *report.Identity
	certificate *report.Certificate
	accountURI  string
	nonce       string
	layout      string // the bundle's layout (domain, bundle)
}

// commands maps each command to its implementation and the flags it accepts
// beyond the common ones.
var commands = map[string]struct {
	run   func(ctx context.Context, o *options, arg string) (*result, error)
	flags []string
}{
	"domain":  {runDomain, []string{"connect", "ca-file", "resolver", "ct-url", "caa-issuer", "validation-methods"}},
	"gateway": {runGateway, []string{"connect", "ca-file", "resolver", "ct-url", "caa-issuer", "validation-methods"}},
	"tls":     {runTLS, []string{"connect"}},
	"bundle":  {runBundle, nil},
	"quote":   {runQuote, []string{"report-data"}},
	"webhook": {runWebhook, []string{"token-file", "max-age"}},
}

// commonFlags apply to every command.
var commonFlags = map[string]bool{"json": true, "strict": true, "timeout": true, "deadline": true, "tdx-root": true, "app-id": true,
	"compose-hash": true, "compose": true, "collateral": true, "help": true, "h": true}

// run is main without the process: it returns the exit status.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, color bool) int {
	if text, err, ok := helpRequest(args); ok {
		if err != nil {
			printError(stderr, err)
			return exitError
		}
		io.WriteString(stdout, text)
		return exitOK
	}
	o, cmd, arg, err := parseArgs(args)
	if errors.Is(err, flag.ErrHelp) {
		io.WriteString(stdout, helpText(args))
		return exitOK
	}
	if err == nil {
		o.color, o.stdin = color, stdin
		o.now = time.Now()
		err = o.load()
	}
	var res *result
	if err == nil {
		// One deadline for the whole run: the server decides how many
		// steps there are, --timeout bounds only each.
		dctx, cancel := context.WithTimeout(ctx, o.deadline)
		res, err = commands[cmd].run(dctx, o, arg)
		if err != nil && errors.Is(dctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil {
			err = &cliError{err: fmt.Errorf("the run took longer than --deadline %s (%w)", o.deadline, err),
				hint: "the server answers too slowly or without end; raise --deadline if it is only slow"}
		}
		cancel()
	}
	if err != nil {
		printError(stderr, err)
		return exitError
	}
	if o.strict {
		res.checks = append(res.checks, strictIdentity(res.checks)...)
	}
	r := report.New(cmd, arg, o.now, o.strict, res.checks)
	r.Connect, r.Identity, r.Certificate, r.AccountURI, r.Nonce = o.connect, res.identity, res.certificate, res.accountURI, res.nonce
	r.Layout = res.layout
	if o.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		if err := enc.Encode(r); err != nil {
			printError(stderr, fmt.Errorf("writing the report: %w", err))
			return exitError
		}
	} else if err := writeText(stdout, r, o.color); err != nil {
		printError(stderr, fmt.Errorf("writing the checklist: %w", err))
		return exitError
	}
	if r.Failed() {
		return exitFail
	}
	return exitOK
}

// strictIdentity is --strict's demand that the quote be compared with an
// expected identity: a quote that verifies proves some app runs in some
// TEE, not which. Nothing when the run has no identity checks.
func strictIdentity(cs []evidence.Check) []evidence.Check {
	seen := false
	for _, c := range cs {
		if strings.HasPrefix(c.Name, "identity.") || strings.Contains(c.Name, ".identity.") {
			seen = true
			if c.Status == evidence.Pass {
				return nil
			}
		}
	}
	if !seen {
		return nil
	}
	return []evidence.Check{{Name: checkIdentityCompared, Status: evidence.Fail,
		Detail: "--strict: no identity value was compared with an expected one",
		Hint:   "give --app-id, --compose-hash or --compose with what this deployment must run"}}
}

// helpRequest answers `verifycli help [COMMAND]`; ok is false for any
// other command line.
func helpRequest(args []string) (text string, err error, ok bool) {
	if len(args) == 0 || args[0] != "help" {
		return "", nil, false
	}
	switch {
	case len(args) == 1:
		return usage(), nil, true
	case len(args) == 2 && commands[args[1]].run != nil:
		return commandUsage(args[1]), nil, true
	}
	return "", usageErr("run verifycli help for the commands", "help takes one command name, one of %s; got %s",
		strings.Join(commandNames, ", "), strings.Join(args[1:], " ")), true
}

// helpText is -h's answer: the help of the command on the line, if any.
func helpText(args []string) string {
	for _, a := range args {
		if commands[a].run != nil {
			return commandUsage(a)
		}
	}
	return usage()
}

func printError(w io.Writer, err error) {
	msg := strings.TrimSuffix(err.Error(), ".")
	fmt.Fprintf(w, "verifycli: error: %s\n", msg)
	var ce *cliError
	if errors.As(err, &ce) && ce.hint != "" {
		fmt.Fprintf(w, "hint: %s\n", strings.TrimSuffix(ce.hint, "."))
	}
}

// parseArgs reads the command, its one argument and the flags, which may
// come anywhere on the line.
// seeHelp ends every usage error.
const seeHelp = "run verifycli -h for the commands and flags"

// rawFlags are the flags parsed into options by checkValues.
type rawFlags struct{ methods, appID, composeHash, reportData string }

func parseArgs(args []string) (*options, string, string, error) {
	o, r := &options{}, &rawFlags{}
	fs := newFlagSet(o, r)
	positional, set, err := parseFlags(fs, args)
	if err != nil {
		return nil, "", "", err
	}
	cmd, err := checkCommand(positional, set)
	if err != nil {
		return nil, "", "", err
	}
	if err := o.checkValues(r); err != nil {
		return nil, "", "", err
	}
	return o, cmd, positional[1], nil
}

// newFlagSet declares every flag of every command.
func newFlagSet(o *options, r *rawFlags) *flag.FlagSet {
	fs := flag.NewFlagSet("verifycli", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.BoolVar(&o.json, "json", false, "")
	fs.BoolVar(&o.strict, "strict", false, "")
	fs.BoolVar(&o.collateral, "collateral", false, "")
	fs.DurationVar(&o.timeout, "timeout", defaultTimeout, "")
	fs.DurationVar(&o.deadline, "deadline", defaultDeadline, "")
	fs.StringVar(&o.connect, "connect", "", "")
	fs.StringVar(&o.tdxRootFile, "tdx-root", "", "")
	fs.StringVar(&o.caFile, "ca-file", "", "")
	fs.StringVar(&o.resolver, "resolver", "", "")
	fs.StringVar(&o.ctURL, "ct-url", defaultCTURL, "")
	fs.StringVar(&o.caaIssuer, "caa-issuer", "", "")
	fs.StringVar(&r.methods, "validation-methods", "dns-01", "")
	fs.StringVar(&r.appID, "app-id", "", "")
	fs.StringVar(&r.composeHash, "compose-hash", "", "")
	fs.StringVar(&o.composeFile, "compose", "", "")
	fs.StringVar(&r.reportData, "report-data", "", "")
	fs.StringVar(&o.tokenFile, "token-file", "", "")
	fs.DurationVar(&o.maxAge, "max-age", 10*time.Minute, "")

	return fs
}

// parseFlags parses flags anywhere among the arguments (before "--") and
// returns the positional arguments and the flags set.
func parseFlags(fs *flag.FlagSet, args []string) ([]string, map[string]bool, error) {
	var positional []string
	set := map[string]bool{}
	rest := args
	for {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, nil, err
			}
			msg := err.Error()
			if name, ok := strings.CutPrefix(msg, "flag provided but not defined: "); ok {
				msg = "unknown flag --" + strings.TrimLeft(name, "-")
			} else {
				// The flag package names flags with one dash; the usage text uses two.
				msg = strings.NewReplacer("flag -", "flag --", "for -", "for --", "argument: -", "argument: --").Replace(msg)
			}
			return nil, nil, usageErr(seeHelp, "%s", msg)
		}
		rest = fs.Args()
		if len(rest) == 0 {
			break
		}
		if rest[0] == "--" {
			positional = append(positional, rest[1:]...)
			break
		}
		positional = append(positional, rest[0])
		rest = rest[1:]
	}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return positional, set, nil
}

// checkCommand checks the command, its one argument and that every flag set
// applies to it.
func checkCommand(positional []string, set map[string]bool) (string, error) {
	if len(positional) == 0 {
		return "", usageErr(seeHelp, "no command given; want one of domain, gateway, tls, bundle, quote, webhook")
	}
	cmd := positional[0]
	spec, ok := commands[cmd]
	if !ok {
		return "", usageErr(seeHelp, "unknown command %q; want one of domain, gateway, tls, bundle, quote, webhook", cmd)
	}
	what := map[string]string{"domain": "https://DOMAIN", "gateway": "https://gateway.BASE", "tls": "https://HOST:PORT", "bundle": "DIR", "quote": "FILE", "webhook": "FILE"}[cmd]
	switch len(positional) {
	case 1:
		return "", usageErr(seeHelp, "%s needs one argument: verifycli %s %s", cmd, cmd, what)
	case 2:
	default:
		return "", usageErr(seeHelp, "%s takes one argument (%s), got %d: %s", cmd, what, len(positional)-1, strings.Join(positional[1:], " "))
	}
	allowed := map[string]bool{}
	for _, f := range spec.flags {
		allowed[f] = true
	}
	for name := range set {
		if !commonFlags[name] && !allowed[name] {
			return "", usageErr(seeHelp, "--%s does not apply to %s", name, cmd)
		}
	}

	return cmd, nil
}

// checkValues checks the flags' values and fills in the parsed ones.
func (o *options) checkValues(r *rawFlags) error {
	if o.deadline <= 0 {
		return usageErr("give a positive duration such as 1m or 5m", "--deadline %s must be positive", o.deadline)
	}
	if o.timeout <= 0 {
		return usageErr("give a positive duration such as 30s or 2m", "--timeout %s must be positive", o.timeout)
	}
	if o.connect != "" {
		if _, port, err := net.SplitHostPort(o.connect); err != nil || port == "" {
			return usageErr("give host:port, such as 127.0.0.1:8443 or [::1]:443", "--connect %q is not host:port", o.connect)
		}
	}
	if o.resolver != "" {
		if _, port, err := net.SplitHostPort(o.resolver); err != nil || port == "" {
			return usageErr("give host:port, such as 127.0.0.1:53", "--resolver %q is not host:port", o.resolver)
		}
	}
	noCT := false
	if strings.EqualFold(o.ctURL, "off") {
		o.ctURL, noCT = "", true
	}
	if !noCT {
		u, err := url.Parse(o.ctURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return usageErr("give the API's base URL, such as https://crt.sh/, or off", "--ct-url %q is not an http(s) URL", o.ctURL)
		}
	}
	for _, m := range strings.Split(r.methods, ",") {
		m = strings.ToLower(strings.TrimSpace(m))
		switch m {
		case "dns-01", "http-01", "tls-alpn-01", "dns-persist-01":
			o.methods = append(o.methods, m)
		default:
			return usageErr("accepted methods: dns-01, http-01, tls-alpn-01, dns-persist-01, comma-separated", "--validation-methods: unknown method %q", m)
		}
	}
	if o.caaIssuer != "" && strings.ContainsAny(o.caaIssuer, " ;=/") {
		return usageErr("give the issuer domain alone, such as letsencrypt.org", "--caa-issuer %q is not a domain name", o.caaIssuer)
	}
	var err error
	if o.appID, err = hexFlag("app-id", r.appID, 20); err != nil {
		return err
	}
	if o.composeHash, err = hexFlag("compose-hash", r.composeHash, 32); err != nil {
		return err
	}
	if r.reportData != "" {
		s := strings.TrimPrefix(strings.ToLower(r.reportData), "0x")
		b, err := hex.DecodeString(s)
		if err != nil || len(b) == 0 || len(b) > 64 {
			return usageErr("give 1 to 64 bytes in hex; shorter values are right-padded with zeros, as the guest agent does", "--report-data is not 1 to 64 bytes of hex")
		}
		o.reportData = make([]byte, 64)
		copy(o.reportData, b)
	}
	return nil
}

// hexFlag checks a hex flag of exactly n bytes (an optional 0x prefix and
// upper case accepted) and returns it in lowercase.
func hexFlag(name, v string, n int) (string, error) {
	if v == "" {
		return "", nil
	}
	s := strings.TrimPrefix(strings.ToLower(strings.TrimSpace(v)), "0x")
	if b, err := hex.DecodeString(s); err != nil || len(b) != n {
		return "", usageErr(fmt.Sprintf("--%s takes %d bytes as %d hex characters", name, n, 2*n), "--%s %q is not %d bytes of hex", name, v, n)
	}
	return s, nil
}

// load reads the files the flags name.
func (o *options) load() error {
	if o.tdxRootFile != "" {
		b, err := os.ReadFile(o.tdxRootFile)
		if err != nil {
			return &cliError{err: fmt.Errorf("reading --tdx-root: %w", err), hint: "give a PEM file with the TDX root CA certificate"}
		}
		if _, err := evidence.ParseCertsPEM(b); err != nil {
			return &cliError{err: fmt.Errorf("--tdx-root %s: %w", o.tdxRootFile, err), hint: "give a PEM file with the TDX root CA certificate"}
		}
		o.tdxRoot = b
	}
	if o.caFile != "" {
		b, err := os.ReadFile(o.caFile)
		if err != nil {
			return &cliError{err: fmt.Errorf("reading --ca-file: %w", err), hint: "give a PEM file of CA certificates"}
		}
		if o.extraRoots, err = evidence.ParseCertsPEM(b); err != nil {
			return &cliError{err: fmt.Errorf("--ca-file %s: %w", o.caFile, err), hint: "give a PEM file of CA certificates"}
		}
	}
	if o.composeFile != "" {
		b, err := os.ReadFile(o.composeFile)
		if err != nil {
			return &cliError{err: fmt.Errorf("reading --compose: %w", err), hint: "give the app's app-compose.json exactly as deployed"}
		}
		o.composeJSON = b
	}
	return nil
}
