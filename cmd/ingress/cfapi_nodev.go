//go:build nodev

package main

import "net/http"

// cloudflareHook: the CLOUDFLARE_API_URL test hook is not in production
// builds. Set, it is refused rather than ignored: an operator who set it
// expects Cloudflare calls to go elsewhere, and they would not.
func cloudflareHook(s *settings) (*http.Client, error) {
	for _, name := range []string{"CLOUDFLARE_API_URL", "CLOUDFLARE_API_CA"} {
		if v, ok := s.lookup(name); ok && v != "" {
			return nil, configErrorf("%s is a test hook and not in this build (built with -tags nodev, as the container image is): unset it", name)
		}
	}
	return nil, nil
}
