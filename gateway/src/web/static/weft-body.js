// Loaded first thing in <body>, as a file so the Content-Security-Policy can forbid inline
// script: marks the page as scripted, which the design system's styles for enhanced components
// key on. Every page works without it.
document.body.className += ' js-enabled' + ('noModule' in HTMLScriptElement.prototype ? ' govuk-frontend-supported' : '');
