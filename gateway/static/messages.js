// Sentences for the codes the capture page can end with or meet on the way: BWS error codes,
// the page's own codes (user_abort, ...) and camera errors (DOMException names).
// Shared by the capture page and the development return page; never show a code alone.

const MESSAGES = {
  // BWS outcomes
  LiveDetectionFailed: "We could not confirm that a live person is in front of the camera. " +
    "Please move your head a little between the pictures, in good light.",
  ChallengeResponseFailed: "Your head movements did not follow the arrows. " +
    "Please turn your head clearly in the direction each arrow shows.",
  NotEnoughSamples: "We did not get enough clear pictures of your face.",
  ExecutionOfJobTimedOut: "The service is busy right now. Please try again in a moment.",
  NoTemplateAvailable: "There is no enrollment for this person yet, so we cannot check who you are. " +
    "Please enroll first.",
  NotRecognized: "We did not recognize you.",
  NoFaceFound: "We cannot see a face. Keep your whole face inside the oval, in good light.",
  MultipleFacesFound: "There is more than one face in the picture. Please make sure you are alone in front of the camera.",
  // the page's own outcomes
  user_abort: "You cancelled.",
  user_skip: "You skipped the face capture.",
  invalid_token: "This link is no longer valid (it may have expired). Please go back to the app and start again.",
  tries_exceeded: "You have used up all attempts of this link. Please go back to the app and start again.",
  server_error: "Something went wrong on our side. Please try again later.",
  // camera errors (DOMException names of getUserMedia)
  NotAllowedError: "You have not allowed this page to use your camera. Allow the camera for this page " +
    "(in your browser's address bar or settings), then press “Try again”.",
  SecurityError: "Your browser does not allow this page to use the camera.",
  NotFoundError: "No camera was found. Connect a camera (or close apps that hide it), then press “Try again”.",
  OverconstrainedError: "Your camera cannot deliver a suitable picture. Try another camera.",
  NotReadableError: "Your camera is in use by another app or cannot be started. Close other apps that use " +
    "the camera, then press “Try again”.",
  AbortError: "The camera could not be started. Please press “Try again”.",
  InsecureContext: "The camera can only be used when this page is opened over a secure (https) connection.",
  NoCameraApi: "This browser cannot use a camera. Please try a current browser such as Chrome, Firefox or Safari.",
};

/** A sentence for a code; an unknown code gets a general sentence that names it. */
export function describe(code) {
  return MESSAGES[code] || `Something went wrong (reference: ${code}).`;
}

export const SUCCESS = {
  enroll: "Done: your face is enrolled.",
  verify: "Done: you have been verified.",
  identify: "Done: you have been identified.",
  livenessdetection: "Done: the liveness check succeeded.",
};
