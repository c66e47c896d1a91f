package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/google/go-tdx-guest/verify/trust"
)

// collateralGetter fetches Intel PCS collateral for --collateral with a
// deadline on each request (go-tdx-guest's default getter has none).
type collateralGetter struct {
	timeout time.Duration
}

var _ trust.HTTPSGetter = (*collateralGetter)(nil)

// maxCollateral bounds one collateral document (CRLs are the largest).
const maxCollateral = 16 << 20

func (g *collateralGetter) Get(u string) (map[string][]string, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), g.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("fetching collateral %s: %w", u, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("fetching collateral %s: %w", u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxCollateral+1))
	if err != nil {
		return nil, nil, fmt.Errorf("reading collateral %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("fetching collateral %s: HTTP status %d", u, resp.StatusCode)
	}
	if len(b) > maxCollateral {
		return nil, nil, fmt.Errorf("fetching collateral %s: over %d bytes", u, maxCollateral)
	}
	return resp.Header, b, nil
}
