/** The SNS-like interface reminders go through (the handler wraps SNS Publish; tests record). */
export interface Notifier {
  publish(message: { subject: string; body: string }): Promise<void>;
}
