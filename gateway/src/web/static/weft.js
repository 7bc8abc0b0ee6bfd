// Progressive enhancement only: starts the GOV.UK and MOJ components (error summary focus,
// sortable tables, …). Every page works without it.
import { initAll } from '/assets/govuk-frontend.min.js';
import { initAll as initMoj } from '/assets/moj-frontend.min.js';

initAll();
initMoj();
