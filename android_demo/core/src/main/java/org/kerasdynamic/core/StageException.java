package org.kerasdynamic.core;

/** A stage failed to run for a sample, or returned something other than its declared outputs. */
public final class StageException extends RuntimeException {
  private static final long serialVersionUID = 1L;

  private final String stage;

  StageException(String stage, String message, Throwable cause) {
    super("stage '" + stage + "': " + message, cause);
    this.stage = stage;
  }

  /** The name of the stage that failed. */
  public String stage() {
    return stage;
  }
}
