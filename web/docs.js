// Renders this server's OpenAPI document with Redoc (web/vendor/redoc.standalone.js,
// from npm, pinned by scripts/vendor-redoc). Loaded as a file: the page's CSP allows no
// inline script.
/* global Redoc */
const root = document.getElementById('redoc');
Redoc.init(
  '/api/openapi.json',
  {
    expandResponses: '200,201,202,204',
    hideDownloadButton: false,
    jsonSampleExpandLevel: 3,
    sortPropsAlphabetically: false,
  },
  root,
  (error) => {
    // Tests (and people) can tell a rendered page from a failed one.
    document.body.dataset.docs = error ? 'failed' : 'ready';
    if (error) {
      root.textContent = `The API reference could not be rendered: ${error.message || error}. ` +
        'The document is at /api/openapi.json.';
    }
  },
);
