package proxy

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseTarget(t *testing.T) {
	good := map[string]Target{
		"app:8080":             {"", "app:8080"},
		" app:8080 ":           {"", "app:8080"},
		"http://app":           {SchemeHTTP, "app:80"},
		"https://App.Local/":   {SchemeHTTPS, "app.local:443"},
		"HTTP://app:81":        {SchemeHTTP, "app:81"},
		"grpc://[::1]:50051":   {SchemeGRPC, "[::1]:50051"},
		"h2c://10.0.0.1:80":    {SchemeH2C, "10.0.0.1:80"},
		"tcp://db_1:5432":      {SchemeTCP, "db_1:5432"},
		"http://[0:0::1]":      {SchemeHTTP, "[::1]:80"},
		"my-app.svc.local:443": {"", "my-app.svc.local:443"},
		"https://[::1]":        {SchemeHTTPS, "[::1]:443"},
	}
	for in, want := range good {
		got, err := ParseTarget(in)
		if err != nil || got != want {
			t.Errorf("ParseTarget(%q) = %+v, %v; want %+v", in, got, err, want)
			continue
		}
		if again, err := ParseTarget(got.String()); err != nil || again != got {
			t.Errorf("ParseTarget(%q).String() = %q does not parse back: %+v, %v", in, got.String(), again, err)
		}
	}
	bad := map[string]string{
		"":                              "empty backend address",
		"app":                           "missing port",
		"tcp://app":                     "missing port",
		"ftp://app:21":                  `unknown scheme "ftp"`,
		"http://app:80/api":             "paths",
		"http://user@app:80":            "user info",
		"app:0":                         "from 1 to 65535",
		"app:65536":                     "from 1 to 65535",
		"app:http":                      "from 1 to 65535",
		"a..b:80":                       "empty label",
		"app!:80":                       `character '!'`,
		"http://app:80?x=1":             "queries",
		"app name:80":                   "spaces",
		"https://:443":                  "host is empty",
		strings.Repeat("a", 300) + ":1": "longer than 253",
	}
	for in, want := range bad {
		_, err := ParseTarget(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseTarget(%q) error %v, want one mentioning %q", in, err, want)
			continue
		}
		if in != "" && !strings.Contains(err.Error(), "want") && !strings.Contains(err.Error(), "not a number from") && !strings.Contains(err.Error(), "host") {
			t.Errorf("ParseTarget(%q) error %q does not say what is accepted", in, err)
		}
	}
}

func TestParseRoutingMap(t *testing.T) {
	in := "# routes\r\n" +
		"app.example.com=app:8080\r\n" +
		"\n" +
		"  API.Example.com. = http://api:80  # trailing comment\n" +
		"*.users.example.com=h2c://users:9000, grpc.example.com=grpc://rpc:50051,\n"
	got, err := ParseRoutingMap(in)
	if err != nil {
		t.Fatal(err)
	}
	want := []Route{
		{"app.example.com", Target{"", "app:8080"}},
		{"api.example.com", Target{SchemeHTTP, "api:80"}},
		{"*.users.example.com", Target{SchemeH2C, "users:9000"}},
		{"grpc.example.com", Target{SchemeGRPC, "rpc:50051"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	if routes, err := ParseRoutingMap("  \n# nothing\n"); err != nil || len(routes) != 0 {
		t.Fatalf("empty map: %v, %v", routes, err)
	}

	for in, wants := range map[string][]string{
		"a.example.com=a:1\nbroken":                {"line 2", `"broken"`, "domain=host:port"},
		"a.example.com=a:1,b.example.com":          {"line 1", `"b.example.com"`, "no '='"},
		"*.*.example.com=a:1":                      {"line 1", `"*.*.example.com"`, "whole first label"},
		"a.*.example.com=a:1":                      {"line 1", "whole first label"},
		"x=":                                       {"line 1", `domain "x"`, "empty backend address"},
		"a.example.com=ftp://a:1":                  {"line 1", "unknown scheme"},
		"\n\na.example.com=a:1\nA.example.com=b:2": {"line 4", "already routed on line 3"},
		"=a:1":             {"line 1", "empty"},
		"exa mple.com=a:1": {"line 1", `character " "`},
	} {
		_, err := ParseRoutingMap(in)
		if err == nil {
			t.Errorf("ParseRoutingMap(%q) accepted", in)
			continue
		}
		for _, w := range wants {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("ParseRoutingMap(%q) error %q, want it to mention %s", in, err, w)
			}
		}
	}
}

func TestRouterMatch(t *testing.T) {
	routes, err := ParseRoutingMap("app.test=a:1\n*.wild.test=w:1\nx.wild.test=x:1")
	mustf(t, err, "parse")
	r, err := newRouter(routes, Target{Addr: "d:1"})
	mustf(t, err, "router")
	for name, want := range map[string]string{
		"app.test":      "a:1",
		"APP.TEST.":     "a:1",
		"x.wild.test":   "x:1", // exact beats wildcard
		"y.wild.test":   "w:1",
		"a.y.wild.test": "d:1",
		"wild.test":     "d:1",
		"":              "d:1",
	} {
		if got, ok := r.match(name); !ok || got.Addr != want {
			t.Errorf("match(%q) = %v, %v; want %s", name, got, ok, want)
		}
	}
	r, _ = newRouter(routes, Target{})
	if got, ok := r.match("other.test"); ok {
		t.Errorf("without default, match(other.test) = %v", got)
	}
	if _, err := newRouter([]Route{{Host: "a.test", Target: Target{Addr: "a:1"}}, {Host: "A.test", Target: Target{Addr: "b:1"}}}, Target{}); err == nil {
		t.Error("duplicate route accepted")
	}
}

func FuzzParseRoutingMap(f *testing.F) {
	for _, seed := range []string{
		"app.example.com=app:8080",
		"*.example.com=http://web\nb.example.com=h2c://[::1]:9000, c.example.com=grpc://10.0.0.1:1 # x",
		"a=b",
		"=\n,\r\n#",
		"a.b=https://c:443/",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		routes, err := ParseRoutingMap(in)
		if err != nil {
			if !strings.Contains(err.Error(), "routing map line ") {
				t.Fatalf("error %q does not name the line", err)
			}
			return
		}
		// Accepted input re-encodes to a map that parses to the same routes.
		again, err := ParseRoutingMap(FormatRoutingMap(routes))
		if err != nil {
			t.Fatalf("re-encoded map %q: %v", FormatRoutingMap(routes), err)
		}
		if len(routes) > 0 && !reflect.DeepEqual(routes, again) {
			t.Fatalf("round trip changed routes: %+v -> %+v", routes, again)
		}
		if FormatRoutingMap(again) != FormatRoutingMap(routes) {
			t.Fatal("encoding is not stable")
		}
		if _, err := newRouter(routes, Target{}); err != nil {
			t.Fatalf("parsed routes rejected by the router: %v", err)
		}
	})
}

func FuzzParseTarget(f *testing.F) {
	for _, seed := range []string{"app:80", "http://app", "grpc://[::1]:1", "tcp://a_b.c:65535"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		tg, err := ParseTarget(in)
		if err != nil {
			return
		}
		again, err := ParseTarget(tg.String())
		if err != nil || again != tg {
			t.Fatalf("%q -> %q -> %+v, %v", in, tg.String(), again, err)
		}
	})
}
